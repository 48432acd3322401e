"""Bring your own labelled data: a PASCAL VOC or COCO folder as a freemask prefix.

``import_dataset`` reads a VOC folder (``VOCdevkit/VOC2012/``, or a bare ``VOC2012/`` folder:
``JPEGImages/``, ``SegmentationClass/`` palette-index PNGs with 255 = ignore, optionally
``SegmentationObject/`` and ``ImageSets/Segmentation/<split>.txt``; class names from its
``labels.txt``, background first, else the 21 VOC names) or a COCO folder
(``annotations/instances*.json`` and ``images/``), maps its class names onto the run's, and
writes what every stage reads: ``manifest.jsonl``, ``images/``, ``masks/`` (class-index PNGs in
the run's label dtype) and ``_SUCCESS``, sample by sample through ``StageOutput`` (a killed
import resumes; a prefix imported with other settings is refused). Such a prefix serves as
``segment.validation`` and as ``freemask evaluate --in``.

Class names map case-insensitively onto the run's classes; ``mapping`` renames first (source
name -> a run class, ``background`` or ``ignore``). Every class the data uses must map, or the
import is refused before anything is written. From COCO, objects (``iscrowd: 0``) are painted
in order into the semantic mask, pixels two objects claim become ignore (as torchvision's
segmentation reference reads COCO), and crowd regions (``iscrowd: 1``) become ignore.
"""

from freemask.dataset_import._common import BACKGROUND, IGNORE
from freemask.dataset_import._import import IMPORT_FORMATS, class_table, import_dataset
from freemask.dataset_import._voc import VOC_NAMES

__all__ = ["BACKGROUND", "IGNORE", "IMPORT_FORMATS", "VOC_NAMES", "class_table", "import_dataset"]
