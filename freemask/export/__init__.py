"""Dataset exporters: COCO (polygons, ignore regions as crowd annotations), PASCAL VOC
(``VOCdevkit/VOC2012``, palette PNGs; 16-bit class masks past 254 classes) and Hugging Face
``datasets`` (Parquet with its features). ``export_dataset`` checks the records, builds the
export beside its target and puts it in place whole."""

from freemask.export._coco import export_coco
from freemask.export._hf import export_hf, hf_features
from freemask.export._place import FORMATS, export_dataset
from freemask.export._polygons import mask_polygons, polygons_iou, uncompressed_rle
from freemask.export._voc import VOC_ROOT, export_voc, voc_palette

__all__ = [
    "FORMATS",
    "VOC_ROOT",
    "export_coco",
    "export_dataset",
    "export_hf",
    "export_voc",
    "hf_features",
    "mask_polygons",
    "polygons_iou",
    "uncompressed_rle",
    "voc_palette",
]
