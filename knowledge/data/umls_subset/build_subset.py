"""Regenerate the bundled chest-radiology RRF subset (run by maintainers, not at import).

    python knowledge/data/umls_subset/build_subset.py

Inputs: the PadChest labels CSV shipped in torchxrayvision (label → CUI assignments made by
the PadChest authors; sentence-level label/localisation co-occurrence) and the curation
tables below, written by the kgvlp project. See README.md for field provenance.
"""
from __future__ import annotations

import ast
import collections
import csv
import gzip
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
SAB = "KGVLP"

# Semantic network types (public; UMLS Semantic Network): TUI -> (tree number, name).
STY = {
    "T017": ("A1.2", "Anatomical Structure"),
    "T019": ("A1.2.2.1", "Congenital Abnormality"),
    "T020": ("A1.2.2.2", "Acquired Abnormality"),
    "T023": ("A1.2.3.1", "Body Part, Organ, or Organ Component"),
    "T029": ("A2.1.5.2", "Body Location or Region"),
    "T030": ("A2.1.5.1", "Body Space or Junction"),
    "T033": ("A2.2", "Finding"),
    "T037": ("B2.3", "Injury or Poisoning"),
    "T046": ("B2.2.1.2", "Pathologic Function"),
    "T047": ("B2.2.1.2.1", "Disease or Syndrome"),
    "T061": ("B1.3.1.3", "Therapeutic or Preventive Procedure"),
    "T074": ("A1.3.1", "Medical Device"),
    "T082": ("A2.1.5", "Spatial Concept"),
    "T190": ("A1.2.2", "Anatomical Abnormality"),
    "T191": ("B2.2.1.2.1.2", "Neoplastic Process"),
}

# Curation: PadChest label -> (preferred name, TUI, extra aliases). Written by the project.
DEVICE, PROC, DIS, FIND, ANAT_ABN, INJ, NEO, PATH, CONG = (
    "T074", "T061", "T047", "T033", "T190", "T037", "T191", "T046", "T019")
CURATED: dict[str, tuple[str | None, str, list[str]]] = {
    "COPD signs": ("chronic obstructive pulmonary disease", DIS, ["COPD", "copd signs", "obstructive lung disease",
                                                                 "chronic obstructive lung disease"]),
    "Chilaiditi sign": ("Chilaiditi sign", FIND, []),
    "abnormal foreign body": ("foreign body", FIND, ["foreign object"]),
    "abscess": (None, DIS, ["lung abscess"]),
    "adenopathy": ("lymphadenopathy", DIS, ["adenopathy", "enlarged lymph node"]),
    "air bronchogram": (None, FIND, ["air bronchograms"]),
    "air fluid level": (None, FIND, ["air-fluid level"]),
    "air trapping": (None, FIND, []),
    "alveolar pattern": (None, FIND, ["airspace disease", "airspace opacity", "air space disease"]),
    "aortic aneurysm": (None, DIS, []),
    "aortic atheromatosis": ("aortic atherosclerosis", DIS,
                             ["aortic atheromatosis", "aortic calcification", "atherosclerotic aorta", "atherosclerosis",
                              "atherosclerotic disease", "atherosclerotic change", "vascular calcification",
                              "calcified aorta", "atherosclerotic calcification"]),
    "aortic button enlargement": ("aortic knob enlargement", FIND, ["prominent aortic knob"]),
    "artificial aortic heart valve": (None, DEVICE, ["aortic valve replacement"]),
    "artificial heart valve": ("prosthetic heart valve", DEVICE, ["artificial heart valve", "valve replacement"]),
    "artificial mitral heart valve": (None, DEVICE, ["mitral valve replacement"]),
    "asbestosis signs": ("asbestosis", DIS, []),
    "ascendent aortic elongation": ("ascending aorta elongation", FIND, []),
    "atelectasis": (None, PATH, ["atelectatic change", "subsegmental atelectasis", "lobar collapse",
                                  "partial collapse"]),
    "atelectasis basal": ("basilar atelectasis", PATH, ["bibasilar atelectasis", "basal atelectasis"]),
    "atypical pneumonia": (None, DIS, ["atypical infection"]),
    "axial hyperostosis": ("diffuse idiopathic skeletal hyperostosis", DIS, ["DISH", "axial hyperostosis"]),
    "azygos lobe": (None, CONG, ["azygos fissure"]),
    "blastic bone lesion": (None, FIND, ["osteoblastic lesion"]),
    "bone cement": (None, DEVICE, []),
    "bone metastasis": (None, NEO, ["osseous metastasis", "bony metastasis"]),
    "breast mass": (None, FIND, []),
    "bronchiectasis": (None, DIS, []),
    "bronchovascular markings": ("increased bronchovascular markings", FIND,
                                 ["bronchovascular markings", "bronchovascular crowding",
                                  "prominent bronchovascular markings"]),
    "bullas": ("bulla", ANAT_ABN, ["bullous disease", "bullous change", "bleb"]),
    "calcified densities": ("calcified density", FIND, ["calcification"]),
    "calcified granuloma": (None, FIND, ["granulomatous calcification", "calcified granulomas"]),
    "callus rib fracture": ("healed rib fracture", INJ, ["old rib fracture", "callus rib fracture"]),
    "cardiomegaly": (None, FIND, ["enlarged heart", "cardiac enlargement", "enlarged cardiac silhouette",
                                  "heart enlargement", "enlarged heart size"]),
    "catheter": (None, DEVICE, []),
    "cavitation": (None, FIND, ["cavitary lesion", "cavitary"]),
    "central venous catheter": (None, DEVICE, ["central line", "central venous line", "CVC", "PICC",
                                                "PICC line", "peripherally inserted central catheter"]),
    "central venous catheter via jugular vein": ("internal jugular central venous catheter", DEVICE,
                                                 ["jugular catheter", "internal jugular line"]),
    "central venous catheter via subclavian vein": ("subclavian central venous catheter", DEVICE,
                                                    ["subclavian line", "subclavian catheter"]),
    "central venous catheter via umbilical vein": ("umbilical venous catheter", DEVICE, []),
    "cervical rib": (None, CONG, []),
    "chest drain tube": ("chest tube", DEVICE, ["chest drain", "thoracostomy tube"]),
    "chronic changes": ("chronic lung changes", FIND, ["chronic changes", "chronic lung disease"]),
    "clavicle fracture": (None, INJ, ["clavicular fracture"]),
    "consolidation": (None, FIND, ["airspace consolidation", "focal consolidation", "pneumonic consolidation",
                                    "consolidative opacity"]),
    "costophrenic angle blunting": (None, FIND, ["blunting of the costophrenic angle", "costophrenic blunting",
                                                 "blunted costophrenic angle"]),
    "cyst": (None, FIND, []),
    "dai": ("implantable cardioverter defibrillator", DEVICE, ["defibrillator", "AICD", "ICD"]),
    "descendent aortic elongation": ("descending aorta elongation", FIND, []),
    "dextrocardia": (None, CONG, []),
    "diaphragmatic eventration": (None, ANAT_ABN, ["eventration"]),
    "double J stent": (None, DEVICE, []),
    "dual chamber device": ("dual chamber pacemaker", DEVICE, []),
    "emphysema": (None, DIS, ["emphysematous change"]),
    "empyema": (None, DIS, []),
    "endoprosthesis": ("stent", DEVICE, ["endoprosthesis", "vascular stent"]),
    "endotracheal tube": (None, DEVICE, ["ET tube", "ETT", "endotracheal intubation"]),
    "esophagic dilatation": ("esophageal dilatation", FIND, ["dilated esophagus"]),
    "fibrotic band": (None, FIND, ["linear scarring", "scarring", "fibrotic scarring", "linear scar", "scar"]),
    "flattened diaphragm": (None, FIND, ["flattening of the diaphragm", "flattened hemidiaphragms"]),
    "fracture": (None, INJ, []),
    "gastrostomy tube": (None, DEVICE, []),
    "goiter": (None, DIS, []),
    "granuloma": (None, FIND, ["granulomatous disease", "old granulomatous disease", "prior granulomatous disease"]),
    "ground glass pattern": ("ground-glass opacity", FIND, ["ground glass opacity", "ground glass"]),
    "gynecomastia": (None, DIS, []),
    "heart insufficiency": ("heart failure", DIS, ["congestive heart failure", "CHF", "cardiac failure"]),
    "heart valve calcified": ("heart valve calcification", FIND, ["valvular calcification"]),
    "hemidiaphragm elevation": ("elevated hemidiaphragm", FIND, ["hemidiaphragm elevation",
                                                                "elevation of the hemidiaphragm"]),
    "hiatal hernia": (None, ANAT_ABN, ["hiatus hernia"]),
    "hilar congestion": (None, FIND, ["hilar vascular congestion", "vascular congestion"]),
    "hilar enlargement": (None, FIND, ["prominent hila", "hilar prominence", "enlarged hilum"]),
    "humeral fracture": (None, INJ, []),
    "humeral prosthesis": (None, DEVICE, []),
    "hydropneumothorax": (None, DIS, []),
    "hyperinflated lung": ("hyperinflated lungs", FIND, ["hyperexpanded lungs", "hyperexpansion",
                                                         "hyperinflated lung", "overinflation", "hyperinflation",
                                                         "hyperinflated", "hyperexpanded", "hyperaerated",
                                                         "hyperaeration", "overinflated", "overexpanded"]),
    "increased density": ("opacity", FIND, ["increased density", "opacification", "density"]),
    "infiltrates": ("infiltrate", FIND, ["pulmonary infiltrate", "infiltration"]),
    "interstitial pattern": (None, FIND, ["interstitial opacity", "interstitial marking",
                                          "interstitial disease", "interstitial prominence"]),
    "kerley lines": ("Kerley B lines", FIND, ["Kerley lines", "septal lines"]),
    "kyphosis": (None, ANAT_ABN, ["thoracic kyphosis"]),
    "lepidic adenocarcinoma": (None, NEO, []),
    "loculated pleural effusion": (None, DIS, []),
    "lung metastasis": ("pulmonary metastasis", NEO, ["lung metastasis", "metastatic disease"]),
    "lymphangitis carcinomatosa": ("lymphangitic carcinomatosis", NEO, ["lymphangitis carcinomatosa"]),
    "lytic bone lesion": (None, FIND, ["lytic lesion", "osteolytic lesion"]),
    "mammary prosthesis": ("breast implant", DEVICE, ["mammary prosthesis"]),
    "mass": (None, FIND, []),
    "mastectomy": (None, PROC, []),
    "mediastinal enlargement": (None, FIND, ["widened mediastinum", "mediastinal widening"]),
    "mediastinal mass": (None, FIND, []),
    "mediastinal shift": (None, FIND, []),
    "mediastinic lipomatosis": ("mediastinal lipomatosis", DIS, []),
    "metal": ("metallic material", DEVICE, ["metallic density", "metallic foreign body", "metal"]),
    "miliary opacities": ("miliary opacity", FIND, ["miliary pattern", "miliary nodules"]),
    "multiple nodules": (None, FIND, ["multiple pulmonary nodules"]),
    "nephrostomy tube": (None, DEVICE, []),
    "nodule": ("pulmonary nodule", FIND, ["nodule", "lung nodule", "nodular opacity", "nodular density",
                                        "calcified nodule"]),
    "obesity": (None, DIS, []),
    "osteopenia": (None, DIS, ["demineralization", "decreased bone density"]),
    "osteoporosis": (None, DIS, []),
    "osteosynthesis material": (None, DEVICE, ["orthopedic hardware", "fixation hardware", "surgical hardware"]),
    "pacemaker": (None, DEVICE, ["pacer", "cardiac pacemaker", "pacemaker leads"]),
    "pectum carinatum": ("pectus carinatum", CONG, []),
    "pectum excavatum": ("pectus excavatum", CONG, []),
    "pericardial effusion": (None, DIS, []),
    "pleural effusion": (None, DIS, ["effusion", "pleural fluid", "hydrothorax"]),
    "pleural mass": (None, FIND, []),
    "pleural plaques": ("pleural plaque", FIND, ["calcified pleural plaque"]),
    "pleural thickening": (None, FIND, ["pleural scarring"]),
    "pneumomediastinum": (None, FIND, []),
    "pneumonia": (None, DIS, []),
    "pneumoperitoneo": ("pneumoperitoneum", FIND, ["free intraperitoneal air", "free air"]),
    "pneumothorax": (None, DIS, ["PTX"]),
    "post radiotherapy changes": ("post-radiation changes", FIND, ["radiation fibrosis", "post radiotherapy changes"]),
    "prosthesis": (None, DEVICE, []),
    "pulmonary artery enlargement": (None, FIND, ["enlarged pulmonary artery", "prominent pulmonary artery"]),
    "pulmonary artery hypertension": ("pulmonary arterial hypertension", DIS, []),
    "pulmonary edema": (None, PATH, ["edema", "interstitial edema", "alveolar edema", "fluid overload"]),
    "pulmonary fibrosis": (None, DIS, ["fibrosis", "fibrotic change", "interstitial fibrosis"]),
    "pulmonary hypertension": (None, DIS, []),
    "pulmonary mass": (None, FIND, ["lung mass"]),
    "pulmonary venous hypertension": (None, DIS, []),
    "reservoir central venous catheter": ("implanted port", DEVICE, ["port-a-cath", "port catheter",
                                                                     "portacath", "reservoir catheter"]),
    "respiratory distress": (None, FIND, ["respiratory distress syndrome", "ARDS"]),
    "reticulonodular interstitial pattern": ("reticulonodular opacity", FIND,
                                             ["reticulonodular pattern", "reticular opacity",
                                              "reticulonodular interstitial pattern"]),
    "rib fracture": (None, INJ, []),
    "right sided aortic arch": ("right aortic arch", CONG, ["right sided aortic arch"]),
    "round atelectasis": (None, PATH, ["rounded atelectasis"]),
    "sclerotic bone lesion": (None, FIND, ["sclerotic lesion", "bone island"]),
    "scoliosis": (None, ANAT_ABN, ["curvature of the spine", "spinal curvature", "levoscoliosis", "dextroscoliosis",
                                   "rotoscoliosis", "levoconvex curvature", "dextroconvex curvature"]),
    "single chamber device": ("single chamber pacemaker", DEVICE, []),
    "soft tissue mass": (None, FIND, []),
    "sternotomy": (None, PROC, ["median sternotomy", "sternotomy wires", "sternal wires"]),
    "subcutaneous emphysema": (None, FIND, ["subcutaneous air", "soft tissue emphysema"]),
    "suboptimal study": (None, FIND, ["limited study", "poor inspiration", "low lung volumes"]),
    "superior mediastinal enlargement": (None, FIND, []),
    "surgery breast": ("breast surgery", PROC, []),
    "surgery heart": ("cardiac surgery", PROC, ["CABG", "coronary artery bypass graft", "cardiac surgery"]),
    "surgery humeral": ("humeral surgery", PROC, []),
    "surgery lung": ("lung surgery", PROC, ["lobectomy", "pneumonectomy", "wedge resection"]),
    "surgery neck": ("neck surgery", PROC, []),
    "suture material": (None, DEVICE, ["surgical clips", "surgical sutures", "suture"]),
    "thoracic cage deformation": ("chest wall deformity", ANAT_ABN, ["thoracic cage deformity"]),
    "total atelectasis": ("lung collapse", PATH, ["total atelectasis", "complete collapse"]),
    "tracheostomy tube": (None, DEVICE, ["tracheostomy"]),
    "tuberculosis": (None, DIS, ["TB"]),
    "tuberculosis sequelae": (None, FIND, ["old tuberculosis", "sequela of tuberculosis"]),
    "vascular redistribution": ("pulmonary vascular redistribution", FIND,
                                ["cephalization", "vascular redistribution", "pulmonary vascular congestion"]),
    "ventriculoperitoneal drain tube": ("ventriculoperitoneal shunt", DEVICE, ["VP shunt"]),
    "vertebral compression": ("vertebral compression deformity", INJ, ["compression deformity",
                                                                       "compression fracture"]),
    "vertebral degenerative changes": ("degenerative disease of the spine", DIS,
                                       ["degenerative changes", "spondylosis", "degenerative disc disease",
                                        "osteophyte", "vertebral degenerative changes", "degenerative change",
                                        "spurring", "arthritic change", "spondylitic change"]),
    "vertebral fracture": (None, INJ, ["spine fracture"]),
    "volume loss": (None, FIND, ["decreased lung volume"]),
}
# Localisations: TUI by kind (default body part); spatial qualifiers are T082.
SPATIAL = {"loc left", "loc right", "loc bilateral", "loc central", "loc basal", "loc apical",
           "loc lobar", "loc subsegmental", "loc lung field", "loc middle lung field", "loc upper lung field"}
REGIONS = {"loc hemithorax", "loc hilar", "loc perihilar", "loc suprahilar", "loc paratracheal",
           "loc paravertebral", "loc pectoral", "loc axilar", "loc hypochondrium", "loc left hypochondrium",
           "loc right hypochondrium", "loc subpleural", "loc extrapleural", "loc subcutaneous",
           "loc peribronchi", "loc costophrenic angle", "loc left costophrenic angle",
           "loc right costophrenic angle", "loc aortopulmonary window", "loc cervical", "loc cardiac",
           "loc coronary", "loc esophageal", "loc costoesternal", "loc intersomatic space"}
LOC_NAMES = {
    "loc airways": "airway", "loc aortic": "aorta", "loc aortic button": "aortic knob",
    "loc axilar": "axilla", "loc bronchi": "bronchus", "loc cardiac": "cardiac region",
    "loc column": "spine", "loc costoesternal": "costosternal region",
    "loc dorsal vertebrae": "thoracic vertebra", "loc esophageal": "esophageal region",
    "loc gastric chamber": "gastric air bubble", "loc hilar": "hilum", "loc lobar": "lobar",
    "loc pleural": "pleura", "loc rib": "rib", "loc superior cave vein": "superior vena cava",
    "loc supraspisnous": "supraspinatus", "loc tracheal": "trachea", "loc pectoral": "pectoral region",
    "loc peribronchi": "peribronchial", "loc intersomatic space": "intervertebral disc space",
    "loc lung field": "lung field", "loc central": "central",
    "loc basal": "basal", "loc apical": "apical", "loc coronary": "coronary",
    "loc subsegmental": "subsegmental", "loc bilateral": "bilateral", "loc left": "left",
    "loc right": "right", "loc costophrenic angle": "costophrenic angle",
}
LOC_ALIASES = {
    "loc bone": ["bone density", "bony density", "osseous density"],  # not a lung opacity
    "loc basal": ["bibasilar", "basilar", "lung base"], "loc apical": ["apex", "apices"],
    "loc column": ["spine", "thoracic spine", "vertebral column"], "loc cardiac": ["heart", "cardiac"],
    "loc lung field": ["lung", "lungs"], "loc pleural": ["pleural space"],
    "loc hilar": ["hila", "hilar"], "loc aortic": ["thoracic aorta"],
    "loc diaphragm": ["hemidiaphragm", "diaphragms"], "loc dorsal vertebrae": ["thoracic vertebrae"],
}
# Hierarchy curated by the project: (child label, parent label), read "child isa parent".
ISA = [
    ("loculated pleural effusion", "pleural effusion"), ("hydropneumothorax", "pneumothorax"),
    ("atelectasis basal", "atelectasis"), ("round atelectasis", "atelectasis"),
    ("total atelectasis", "atelectasis"), ("atypical pneumonia", "pneumonia"),
    ("calcified granuloma", "granuloma"), ("multiple nodules", "nodule"),
    ("miliary opacities", "nodule"), ("pulmonary mass", "mass"), ("mediastinal mass", "mass"),
    ("pleural mass", "mass"), ("soft tissue mass", "mass"), ("breast mass", "mass"),
    ("rib fracture", "fracture"), ("clavicle fracture", "fracture"), ("humeral fracture", "fracture"),
    ("vertebral fracture", "fracture"), ("callus rib fracture", "rib fracture"),
    ("central venous catheter", "catheter"), ("central venous catheter via jugular vein", "central venous catheter"),
    ("central venous catheter via subclavian vein", "central venous catheter"),
    ("central venous catheter via umbilical vein", "central venous catheter"),
    ("reservoir central venous catheter", "central venous catheter"),
    ("artificial aortic heart valve", "artificial heart valve"),
    ("artificial mitral heart valve", "artificial heart valve"), ("artificial heart valve", "prosthesis"),
    ("humeral prosthesis", "prosthesis"), ("mammary prosthesis", "prosthesis"),
    ("single chamber device", "pacemaker"), ("dual chamber device", "pacemaker"),
    ("pulmonary artery hypertension", "pulmonary hypertension"),
    ("pulmonary venous hypertension", "pulmonary hypertension"),
    ("ascendent aortic elongation", "aortic button enlargement"),
    ("lung metastasis", "pulmonary mass"), ("bone metastasis", "lytic bone lesion"),
    ("subcutaneous emphysema", "emphysema"), ("asbestosis signs", "pulmonary fibrosis"),
    ("pleural plaques", "pleural thickening"), ("reticulonodular interstitial pattern", "interstitial pattern"),
    ("kerley lines", "interstitial pattern"), ("ground glass pattern", "increased density"),
    ("consolidation", "increased density"), ("alveolar pattern", "increased density"),
    ("infiltrates", "increased density"), ("tuberculosis sequelae", "tuberculosis"),
    ("empyema", "pleural effusion"), ("superior mediastinal enlargement", "mediastinal enlargement"),
    ("hilar congestion", "vascular redistribution"), ("pulmonary edema", "heart insufficiency"),
    ("surgery lung", "sternotomy"),
    ("loc left costophrenic angle", "loc costophrenic angle"), ("loc right costophrenic angle", "loc costophrenic angle"),
    ("loc left upper lobe", "loc upper lobe"), ("loc right upper lobe", "loc upper lobe"),
    ("loc left lower lobe", "loc lower lobe"), ("loc right lower lobe", "loc lower lobe"),
    ("loc anterior mediastinum", "loc mediastinum"), ("loc middle mediastinum", "loc mediastinum"),
    ("loc posterior mediastinum", "loc mediastinum"), ("loc superior mediastinum", "loc mediastinum"),
    ("loc lower mediastinum", "loc mediastinum"), ("loc major fissure", "loc fissure"),
    ("loc minor fissure", "loc fissure"), ("loc anterior rib", "loc rib"), ("loc posterior rib", "loc rib"),
    ("loc cervical vertebrae", "loc column"), ("loc dorsal vertebrae", "loc column"),
    ("loc humeral head", "loc humerus"), ("loc humeral neck", "loc humerus"),
]
# Not isa, dropped: lung surgery is not a sternotomy; subcutaneous emphysema (air in the soft
# tissues) is not a kind of pulmonary emphysema; pulmonary edema is not a kind of heart failure
# (one of its causes).
NOT_ISA = {("surgery lung", "sternotomy"), ("subcutaneous emphysema", "emphysema"),
           ("pulmonary edema", "heart insufficiency"),
           # metastases are nodules as often as masses, and blastic as often as lytic
           ("lung metastasis", "pulmonary mass"), ("bone metastasis", "lytic bone lesion")}
ISA = [p for p in ISA if p not in NOT_ISA]
DEFINITIONS = {  # written by the project
    "pleural effusion": "Abnormal accumulation of fluid in the pleural space between the lung and chest wall.",
    "pneumothorax": "Air in the pleural space causing partial or complete collapse of the lung.",
    "cardiomegaly": "Enlargement of the cardiac silhouette, usually a cardiothoracic ratio above one half.",
    "atelectasis": "Incomplete expansion or collapse of part or all of a lung.",
    "consolidation": "Replacement of alveolar air by fluid, cells or other material, seen as a homogeneous opacity.",
    "pulmonary edema": "Excess fluid in the lung interstitium or alveoli, often from raised venous pressure.",
    "pneumonia": "Infection and inflammation of the lung parenchyma.",
    "nodule": "Rounded opacity in the lung up to three centimetres in diameter.",
    "mass": "Space-occupying lesion larger than three centimetres.",
    "emphysema": "Permanent enlargement of airspaces distal to the terminal bronchioles with wall destruction.",
    "granuloma": "Small focal lesion from chronic inflammation, often calcified after old infection.",
    "calcified granuloma": "Granuloma containing calcium, a common benign incidental finding.",
    "scoliosis": "Lateral curvature of the spine.",
    "fracture": "Break in the continuity of a bone.",
    "increased density": "Area of the lung that attenuates x-rays more than normal aerated lung.",
    "interstitial pattern": "Reticular or linear opacities reflecting disease of the lung interstitium.",
    "pulmonary fibrosis": "Scarring and thickening of lung tissue.",
    "hiatal hernia": "Protrusion of part of the stomach through the oesophageal hiatus of the diaphragm.",
    "pacemaker": "Implanted device delivering electrical impulses to regulate the heart rhythm.",
    "endotracheal tube": "Tube placed through the mouth or nose into the trachea to maintain an airway.",
    "central venous catheter": "Catheter whose tip lies in a large central vein.",
    "chest drain tube": "Tube inserted through the chest wall into the pleural space to drain air or fluid.",
    "costophrenic angle blunting": "Loss of the sharp costophrenic angle, often from a small effusion.",
    "hemidiaphragm elevation": "Hemidiaphragm positioned higher than expected.",
    "aortic atheromatosis": "Atherosclerotic plaque or calcification of the aortic wall.",
    "vertebral degenerative changes": "Age-related degeneration of vertebrae and discs, such as osteophytes.",
    "heart insufficiency": "Inability of the heart to pump enough blood for the body's needs.",
    "hyperinflated lung": "Lungs larger than normal, with flattened diaphragms.",
    "pleural thickening": "Thickening of the pleura, often from prior inflammation or asbestos exposure.",
    "tuberculosis": "Infection caused by Mycobacterium tuberculosis.",
    "loc lung field": "Region of the chest radiograph projecting over the lungs.",
    "loc pleural": "Serous membrane lining the lungs and the chest cavity.",
    "loc mediastinum": "Central compartment of the thorax between the lungs.",
    "loc diaphragm": "Musculotendinous partition separating the thorax from the abdomen.",
}
NON_FINDINGS = {"normal", "exclude", "unchanged", "suboptimal study"}
# Aliases never written, with the reason (alias review, see README.md): each is a common
# word with a different meaning in chest reports.
DROPPED_ALIASES = {
    "column": "'tracheal air column', 'air column' (the PadChest label 'loc column' means the spine)",
    "dai": "PadChest's Spanish label for a defibrillator; not an English report word",
}


def _padchest_csv() -> Path:
    import torchxrayvision
    return (Path(torchxrayvision.__file__).parent / "data" /
            "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz")


def _labels(cell: str) -> list[str]:
    try:
        return [x.strip() for x in ast.literal_eval(cell)]
    except (ValueError, SyntaxError):
        return []


def padchest_label_cuis(path: Path) -> tuple[dict[str, str], collections.Counter]:
    """Recover PadChest's label -> CUI assignment from per-image co-occurrence.

    PadChest lists a study's labels and CUIs as two unaligned lists; a label/CUI pair is
    accepted when they always occur together (score = P(cui|label)·P(label|cui) ≥ 0.5).
    Also returns sentence-level (finding, localisation) co-occurrence counts.
    """
    co, n_label, n_cui, pairs = (collections.Counter() for _ in range(4))
    with gzip.open(path, "rt", newline="") as f:
        for row in csv.DictReader(f):
            for lab_col, cui_col in (("Labels", "labelCUIS"), ("Localizations", "LocalizationsCUIS")):
                labels = set(_labels(row[lab_col])) - {""}
                cuis = set(re.findall(r"C\d{7}", row[cui_col]))
                n_label.update(labels)
                n_cui.update(cuis)
                co.update((label, cui) for label in labels for cui in cuis)
            for sentence in _sentences(row["LabelsLocalizationsBySentence"]):
                finds = [s.strip() for s in sentence if not s.startswith("loc ")]
                locs = [s.strip() for s in sentence if s.startswith("loc ")]
                pairs.update((a, b) for a in finds for b in locs)
    best: dict[str, tuple[float, str]] = {}
    for (label, cui), n in co.items():
        score = n / n_label[label] * n / n_cui[cui]
        if score >= 0.5 and score > best.get(label, (0.0, ""))[0]:
            best[label] = (score, cui)
    return {label: cui for label, (_, cui) in best.items()}, pairs


def _sentences(cell: str) -> list[list[str]]:
    try:
        value = ast.literal_eval(cell or "[]")
    except (ValueError, SyntaxError):
        return []
    return [[s for s in sentence if isinstance(s, str)] for sentence in value if isinstance(sentence, list)]


def _loc_name(label: str) -> str:
    return LOC_NAMES.get(label, label.removeprefix("loc "))


def concept_table(label_cui: dict[str, str]) -> dict[str, dict]:
    concepts = {}
    for label, cui in sorted(label_cui.items()):
        if label.startswith("loc "):
            tui = "T082" if label in SPATIAL else "T029" if label in REGIONS else "T023"
            name, aliases = _loc_name(label), [label.removeprefix("loc ")] + LOC_ALIASES.get(label, [])
        elif label in CURATED:
            name_override, tui, aliases = CURATED[label]
            name = name_override or label
            aliases = [label] + aliases
        else:
            raise KeyError(f"PadChest label {label!r} has no curation entry")
        unique = list(dict.fromkeys(a for a in aliases
                                    if a.lower() != name.lower() and a.lower() not in DROPPED_ALIASES))
        concepts[label] = {"cui": cui, "name": name, "aliases": unique, "tui": tui,
                           "definition": DEFINITIONS.get(label)}
    return concepts


def write_rrf(concepts: dict[str, dict], pairs: collections.Counter, out: Path) -> None:
    def line(*fields) -> str:
        return "|".join("" if f is None else str(f) for f in fields) + "|\n"

    lui = sui = aui = rui = atui = 0
    conso, sty, defs, rels = [], [], [], []
    for label, c in concepts.items():
        for i, text in enumerate([c["name"]] + c["aliases"]):
            lui, sui, aui = lui + 1, sui + 1, aui + 1
            conso.append(line(c["cui"], "ENG", "P" if i == 0 else "S", f"KL{lui:07d}", "PF",
                              f"KS{sui:07d}", "Y" if i == 0 else "N", f"KA{aui:07d}", "", "", "",
                              SAB, "PT" if i == 0 else "SY", label, text, "0", "N", ""))
        tree, sty_name = STY[c["tui"]]
        atui += 1
        sty.append(line(c["cui"], c["tui"], tree, sty_name, f"KT{atui:07d}", ""))
        if c["definition"]:
            defs.append(line(c["cui"], f"KA{aui:07d}", f"KT{atui:07d}", "", SAB, c["definition"], "N", ""))

    def both(cui1, rel, cui2, rela, inv_rel, inv_rela):
        nonlocal rui
        for a, r, b, ra in ((cui1, rel, cui2, rela), (cui2, inv_rel, cui1, inv_rela)):
            rui += 1
            rels.append(line(a, "", "CUI", r, b, "", "CUI", ra, f"KR{rui:07d}", "", SAB, SAB,
                             "", "", "N", ""))

    for child, parent in ISA:
        if child in concepts and parent in concepts:
            # row: CUI1=parent, REL=CHD (CUI2 is a child of CUI1), RELA=isa (CUI2 isa CUI1)
            both(concepts[parent]["cui"], "CHD", concepts[child]["cui"], "isa", "PAR", "inverse_isa")
    for (finding, loc), n in sorted(pairs.items()):
        if n >= 40 and finding in concepts and loc in concepts and finding not in NON_FINDINGS:
            # row: CUI1=finding, REL=RO, CUI2=location, RELA=location_of (CUI2 is location of CUI1)
            both(concepts[finding]["cui"], "RO", concepts[loc]["cui"], "location_of", "RO", "has_location")

    files = {"MRCONSO.RRF": conso, "MRSTY.RRF": sty, "MRDEF.RRF": defs, "MRREL.RRF": rels}
    for name, rows in files.items():
        (out / name).write_text("".join(rows), encoding="utf-8")
    doc = [line("REL", "CHD", "rel_inverse", "PAR"), line("REL", "PAR", "rel_inverse", "CHD"),
           line("REL", "RO", "rel_inverse", "RO"), line("RELA", "isa", "rela_inverse", "inverse_isa"),
           line("RELA", "inverse_isa", "rela_inverse", "isa"),
           line("RELA", "has_location", "rela_inverse", "location_of"),
           line("RELA", "location_of", "rela_inverse", "has_location")]
    (out / "MRDOC.RRF").write_text("".join(doc), encoding="utf-8")
    fmt = {"MRCONSO.RRF": "CUI,LAT,TS,LUI,STT,SUI,ISPREF,AUI,SAUI,SCUI,SDUI,SAB,TTY,CODE,STR,SRL,SUPPRESS,CVF",
           "MRSTY.RRF": "CUI,TUI,STN,STY,ATUI,CVF",
           "MRDEF.RRF": "CUI,AUI,ATUI,SATUI,SAB,DEF,SUPPRESS,CVF",
           "MRREL.RRF": ("CUI1,AUI1,STYPE1,REL,CUI2,AUI2,STYPE2,RELA,RUI,SRUI,SAB,SL,RG,DIR,"
                         "SUPPRESS,CVF"),
           "MRDOC.RRF": "DOCKEY,VALUE,TYPE,EXPL"}
    mrfiles, mrcols = [], []
    for name, cols in fmt.items():
        n_rows = len(files.get(name, doc))
        mrfiles.append(line(name, f"{name} (kgvlp bundled subset)", cols, len(cols.split(",")), n_rows, ""))
        mrcols.extend(line(col, col, "", "", "", "", name, "") for col in cols.split(","))
    (out / "MRFILES.RRF").write_text("".join(mrfiles), encoding="utf-8")
    (out / "MRCOLS.RRF").write_text("".join(mrcols), encoding="utf-8")


def main() -> None:
    label_cui, pairs = padchest_label_cuis(_padchest_csv())
    concepts = concept_table(label_cui)
    write_rrf(concepts, pairs, HERE)
    print(f"{len(concepts)} concepts written to {HERE}")


if __name__ == "__main__":
    main()
