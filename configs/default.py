"""The one configuration schema of the framework (yacs).

Every key is declared here with its default and a comment. A YAML file may only set keys that
exist here (typos fail with the closest valid key, see ``configs.loader``). Key names follow the
seed study (Rethinking_of_PAR / C2T-Net), so its YAML files keep working.
"""
from yacs.config import CfgNode as CN

_C = CN()
_C.NAME = "default"  # experiment name: results go to <OUTPUT_DIR>/<DATASET.NAME>/<NAME>/
_C.MODE = "train"  # train | eval | video | predict | search | serve (the --mode flag overrides it)
_C.TASK = "par"  # par (attributes) | reid (identities: embedding head, PK batches, retrieval metrics; see REID.*) |
#                  multitask (both heads on one backbone, REID.TASK_WEIGHT / REID.ATTR_WEIGHT); reid and multitask
#                  need a dataset with identities and cameras (MARKET1501, DUKEMTMC)
_C.SEED = 0  # global seed: data split shuffles, init, augmentation
_C.DEVICE = "auto"  # auto (cuda if available, else cpu) | cpu | cuda | cuda:1 ...
_C.OUTPUT_DIR = "exp_results"  # root of all experiment folders
_C.REDIRECTOR = True  # also print the log to the console
_C.DETERMINISTIC = False  # torch.use_deterministic_algorithms (slower; CPU runs are reproducible anyway)

# ----------------------------------------------------------------------------- dataset
_C.DATASET = CN()
_C.DATASET.TYPE = "pedes"  # kept for seed-config compatibility
_C.DATASET.NAME = "NATIVE"  # reader: NATIVE | SYNTH | PETA | PA100k | RAPv1 | RAPv2 | PKL | UPAR
_C.DATASET.ROOT = ""  # dataset root for the public datasets (see README)
_C.DATASET.IMAGE_PATH = "data/NATIVE/main_data/filtered_refined_data"  # NATIVE image folder (<ID>.jpg)
_C.DATASET.NATIVE_EXCEL = "data/NATIVE/label/refined_Native_dataset.xlsx"  # NATIVE label sheet
_C.DATASET.ATTRS = []  # attributes to learn, in order; empty = every attribute column of the sheet
_C.DATASET.GROUPS = []  # attribute groups: [name, kind, attr, attr, ...], kind = exclusive | optional
_C.DATASET.LABEL = "eval"  # public datasets: eval (published evaluated subset) | all
_C.DATASET.SPLIT_ID = 0  # public datasets with several random partitions (PETA, RAP)
_C.DATASET.PETA_SPLIT = "identity"  # PETA: identity (stratified, identity-disjoint, seed DATASET.SPLIT_SEED) | mat | reid (query/gallery; raw release)
#                                      (PETA.mat partition SPLIT_ID; its 5 partitions share identities)
_C.DATASET.PETA_SPLIT_FRACTIONS = [0.6, 0.2, 0.2]  # PETA identity split: train / val / test share of images
#                                                   (PETAzs-like); a sum below 1 leaves the rest unused
_C.DATASET.UNCERTAIN_LABEL = "negative"  # RAP / PKL label 2 (uncertain): negative (0, as Rethinking_of_PAR) | unknown (-1, masked)
_C.DATASET.TRAIN_SPLIT = "train"  # split used for training (trainval to train on train+val)
_C.DATASET.VAL_SPLIT = "val"  # split used to select the best epoch
_C.DATASET.TEST_SPLIT = "test"  # reported at the best epoch when present; "" to skip
_C.DATASET.TRAIN_NATIVE_SPLIT = 0.7  # NATIVE fraction of tubes in train
_C.DATASET.VAL_NATIVE_SPLIT = 0.15  # NATIVE fraction of tubes in val
_C.DATASET.TEST_NATIVE_SPLIT = 0.15  # NATIVE fraction of tubes in test
_C.DATASET.SPLIT_SEED = 0  # seed of the NATIVE tube split (independent of SEED)
_C.DATASET.REMOVE_LOW_QUALITY = False  # NATIVE: drop rows whose Quality is "low"
_C.DATASET.HEIGHT = 256  # network input height
_C.DATASET.WIDTH = 128  # network input width
_C.DATASET.CACHE = True  # decode+resize every image once into an in-memory uint8 cache
_C.DATASET.CACHE_DIR = ""  # also keep that cache on disk here ("" = memory only)
_C.DATASET.ON_BAD_IMAGE = "skip"  # skip (log + count) | error, for unreadable images
_C.DATASET.MAX_IMAGE_PIXELS = 50_000_000  # larger images are treated as bad (decompression bombs)
_C.DATASET.SOURCES = []  # mixed training: extra dataset YAML files whose train split joins this train split
_C.DATASET.SOURCE_MAPS = []  # mixed training: [source DATASET.NAME, map] pairs; the map (a dataset/maps name such as
#                              peta_to_native, or a YAML file) relabels that source by unions of its attributes
_C.DATASET.ATTR_MAP = []  # mixed training: [source DATASET.NAME, source attribute, shared attribute] triples;
#                          prefix the shared name with "!" for a complement (personalMale -> !Gender_female)
_C.DATASET.SYNTH_SIZE = 600  # SYNTH: number of generated images
_C.DATASET.SYNTH_NOISE = 0.1  # SYNTH: pixel noise std of generated images
_C.DATASET.ATTR_FILE = ""  # MARKET1501 / DUKEMTMC: identity attribute .mat ("" = look for it in ROOT, ROOT/attribute,
#                          ROOT/<Market-1501_Attribute | DukeMTMC-attribute> and beside ROOT; "none" = identities only)

# ----------------------------------------------------------------------------- model
_C.MODEL = CN()
_C.MODEL.NAME = "timm"  # registry name: timm | c2t_base | c2t_small | c2t_lite ...
_C.MODEL.BACKBONE = ""  # timm model name (required for MODEL.NAME timm); for c2t_*: "" = the preset's spatial branch
_C.MODEL.PRETRAINED = "none"  # local weight file of the backbone / spatial branch, or "none"
_C.MODEL.VIT = ""  # c2t: transformer branch (timm name); "" = the preset's
_C.MODEL.VIT_PRETRAINED = "none"  # c2t: local weight file of the transformer branch, or "none"
_C.MODEL.FUSION_DIM = 0  # c2t: cross-fusion width (0 = transformer width)
_C.MODEL.FUSION_HEADS = 8  # c2t: heads of each cross-attention block
_C.MODEL.TA_BLOCKS = True  # c2t: channel-aware TA blocks before every spatial stage
_C.MODEL.TA_FAITHFUL = True  # c2t: keep the original's reshape of (attn @ v) (False = proper transpose)
_C.MODEL.DROP_PATH = 0.0  # stochastic depth of the timm branches (the original C2T-Net trained with 0)
_C.MODEL.HEAD_BN = False  # BatchNorm1d before the linear head
_C.MODEL.HEAD = "linear"  # linear (one Linear over the pooled feature) | split (label-balanced learning, ICML 2024:
#                           Linear(C, N*C) + BatchNorm1d -> one C-d feature per attribute, each with its own
#                           Linear(C, 1) on its ReLU; TRAIN.STAGE2 needs it; HEAD_BN does not apply)
_C.MODEL.CHANNELS_LAST = True  # channels_last memory format of the weights (CUDA and CPU; inference follows)
_C.MODEL.COMPILE = False  # torch.compile the model (off by default; slow to start on CPU)

# ----------------------------------------------------------------------------- fine-tuning
_C.FINETUNE = CN()
_C.FINETUNE.MODE = "full"  # full | partial (cross-fusion + head) | head
_C.FINETUNE.TRAIN_TA = False  # partial mode: also train the TA blocks

_C.RELOAD = CN()
_C.RELOAD.TYPE = False  # start from a checkpoint of another experiment
_C.RELOAD.NAME = "backbone"  # kept for seed-config compatibility
_C.RELOAD.MODEL_FOLDER_NAME = ""  # exp_results/<DATASET>/<folder>/ holding the checkpoint
_C.RELOAD.DATASET = ""  # dataset folder of that experiment ("" = DATASET.NAME)
_C.RELOAD.PTH = "best_model.pth"  # checkpoint file in that folder (or an absolute path)
_C.RELOAD.FREEZE = False  # alias of FINETUNE.MODE = head
_C.RELOAD.PARTIAL_FINE_TUNING = False  # alias of FINETUNE.MODE = partial
_C.RELOAD.TRUSTED = False  # allow full unpickling of a legacy checkpoint (only files you trust!)
_C.RELOAD.ATTR_MAP = ""  # another attribute list: head rows of mapped attributes start from the checkpoint's
#                          (a map in dataset/maps/, e.g. peta_to_native, or a YAML path); "" = new head

# ----------------------------------------------------------------------------- training
_C.TRAIN = CN()
_C.TRAIN.BATCH_SIZE = 64  # global batch size (split across DDP ranks)
_C.TRAIN.MAX_EPOCH = 30
_C.TRAIN.SHUFFLE = True
_C.TRAIN.NUM_WORKERS = 4  # DataLoader workers (only when DATASET.CACHE is off)
_C.TRAIN.CLIP_GRAD = True  # clip the gradient norm
_C.TRAIN.CLIP_NORM = 10.0  # max gradient norm when CLIP_GRAD
_C.TRAIN.AMP = "auto"  # auto (bf16 on CUDA if supported, else fp16) | bf16 | fp16 | off; CPU = off
_C.TRAIN.EMA = False  # keep an exponential moving average of the weights, evaluate it
_C.TRAIN.EMA_DECAY = 0.999
_C.TRAIN.RESUME = ""  # "" | auto (last.pth of this experiment) | path to a last.pth
_C.TRAIN.ON_NONFINITE = "stop"  # stop | skip: what a NaN/inf loss does
_C.TRAIN.EVAL_EVERY = 1  # validate every N epochs (always on the last)
_C.TRAIN.LOG_EVERY = 20  # sync loss to the host every N steps (no per-step .item())
_C.TRAIN.STAGE2 = "none"  # none | frdl | goat | frdl_goat: label-balanced stage 2 (ICML 2024) on a MODEL.HEAD split
#                           stage-1 run loaded with RELOAD (plain BCE, no EMA); see STAGE2.* and the README
_C.TRAIN.DATAAUG = CN()
_C.TRAIN.DATAAUG.TYPE = "base"  # base (flip + pad-crop) | none
_C.TRAIN.DATAAUG.ON_GPU = True  # run tensor augmentation on the training device
_C.TRAIN.DATAAUG.RANDOM_ERASING = 0.0  # probability of erasing one random rectangle per training image (Zhong et
#                                       al. 2020: 2-40 % of the area, aspect 0.3-3.3, filled with the ImageNet mean;
#                                       ReID: 0.5); drawn with the batch's seeded generator, after flip + crop
_C.TRAIN.DATAAUG.LOW_QUALITY = 0.0  # probability of degrading a training image like a CCTV crop (downscale x0.25-0.75
#                                    and back, then each with p 1/2: blur, JPEG q15-60, noise; dataset/degrade.py)
_C.TRAIN.OPTIMIZER = CN()
_C.TRAIN.OPTIMIZER.TYPE = "adam"  # sgd | adam | adamw
_C.TRAIN.OPTIMIZER.MOMENTUM = 0.9  # sgd momentum
_C.TRAIN.OPTIMIZER.WEIGHT_DECAY = 5e-4
_C.TRAIN.LR_SCHEDULER = CN()
_C.TRAIN.LR_SCHEDULER.TYPE = "plateau"  # plateau | multistep | warmup_cosine | none
_C.TRAIN.LR_SCHEDULER.LR_STEP = [10, 20]  # multistep milestones (epochs)
_C.TRAIN.LR_SCHEDULER.LR_FT = 1e-5  # learning rate of pretrained groups (backbone / spatial / vit)
_C.TRAIN.LR_SCHEDULER.LR_NEW = 1e-4  # learning rate of new layers (head, fusion, TA)
_C.TRAIN.LR_SCHEDULER.WMUP_COEF = 0.1  # warmup starts at this fraction of the LR
_C.TRAIN.LR_SCHEDULER.WMUP_EPOCHS = 1  # warmup length (warmup_cosine)
_C.TRAIN.LR_SCHEDULER.PATIENCE = 4  # plateau patience (epochs)
_C.TRAIN.LR_SCHEDULER.FACTOR = 0.1  # plateau / multistep decay factor

# ----------------------------------------------------------------------------- label-balanced stage 2
_C.STAGE2 = CN()  # TRAIN.STAGE2's constants; the new heads train at TRAIN.LR_SCHEDULER.LR_NEW with its schedule
_C.STAGE2.BANK_SIZE = 1024  # FRDL: features kept per attribute and label value (FIFO of the most recent)
_C.STAGE2.POS_PROB = 0.5  # FRDL: probability that a re-sampled slot is positive (each attribute independently)
_C.STAGE2.NUMBER = 3  # FRDL: first epoch (0-based) whose new heads train on bank features; earlier epochs use the
#                       batch's own features and labels (the original re-samples from epoch NUMBER + 1)
_C.STAGE2.RESET_EVERY = 50  # GOAT: reset the extractor to the stage-1 weights (and its optimiser state) every K steps
#                             (50 = the original code's period; the GOAT figures in exp_results/README.md used 20)
_C.STAGE2.EXTRACTOR_LR = 1e-5  # GOAT: learning rate of the extractor on the flooding loss (constant)

# ----------------------------------------------------------------------------- loss
_C.LOSS = CN()
_C.LOSS.TYPE = "bceloss"  # seed alias: bceloss | scaledbceloss | gradnormloss | focalloss | myloss
_C.LOSS.TERMS = []  # explicit stack: [{NAME: bce, WEIGHT: 1.0, ...}, ...]; overrides TYPE
_C.LOSS.SAMPLE_WEIGHT = ""  # "" | weight (DeepMAR positive/negative weighting from train priors)
_C.LOSS.LOSS_WEIGHT = [1.0]  # seed key, kept for compatibility
_C.LOSS.SIZESUM = True  # sum over attributes, mean over batch (False: mean over both)
_C.LOSS.LABEL_SMOOTH = 0.0  # BCE label smoothing
_C.LOSS.FOCAL_ALPHA = 0.25
_C.LOSS.FOCAL_GAMMA = 2.0
_C.LOSS.LA_MODE = "none"  # logit adjustment: none | train | posthoc
_C.LOSS.LA_TAU = 1.0
_C.LOSS.LOGIT_UPDATE = False  # scale logits by validation recall ratios (the seed study's best)
_C.LOSS.LOGIT_UPDATE_FLOOR = 0.1  # logit update: recalls below this count as this (a never-predicted attribute is still corrected)
_C.LOSS.GRADNORM_ALPHA = 1.5
_C.LOSS.GRADNORM_LR = 0.025  # learning rate of the GradNorm task weights

# ----------------------------------------------------------------------------- metrics
_C.METRIC = CN()
_C.METRIC.THRESHOLD = 0.5  # probability threshold of a positive prediction (positive when prob > threshold, strictly,
#                            as Rethinking_of_PAR); with METRIC.DECISION other than threshold: the start and fallback
_C.METRIC.DECISION = "threshold"  # the decision rule the checkpoint ships (tools/evaluation/decision.py): threshold
#                                   (METRIC.THRESHOLD for every attribute) | ma | f1 | joint: per-attribute thresholds
#                                   chosen on each validation for mA, instance F1, or their harmonic mean (joint: the
#                                   labels a reader wants, good for both) | tau_ma | tau_f1 | tau_joint: one post-hoc
#                                   logit-adjustment tau for all attributes, chosen on val (fewer parameters to
#                                   over-fit a small val split); stored in the inference contract, so eval,
#                                   predict, video and search use them; the fitted rule's val figures are optimistic
_C.METRIC.GROUP_ARGMAX = False  # decode exclusive groups as arg-max before metrics
_C.METRIC.EVAL_ATTRS = "all"  # attributes the metrics cover: all (trained) | published (the release's evaluated
#                               subset, e.g. PETA's 35 while training all 105 with DATASET.LABEL all)
_C.METRIC.SELECT = "ma"  # metric that chooses the best epoch: ma | instance_f1 | mean_acc (attributes, on
#                          DATASET.VAL_SPLIT) | mAP | rank1 | mINP (ReID, on val_query / val_gallery); TASK reid
#                          reads an attribute metric here as mAP
_C.METRIC.BALANCED = False  # also write the balanced-test view (<split>_bal_* columns in metrics.csv: per attribute
#                             min(#pos, #neg) positives and negatives); always on for TRAIN.STAGE2 runs
_C.METRIC.BALANCED_SEED = 0  # seed of the balanced-test subsample

# ----------------------------------------------------------------------------- inference / video
_C.TEST = CN()
_C.TEST.SPLIT = "test"  # --mode eval: split to evaluate (train | val | test | all)
_C.TEST.BATCH_SIZE = 128
_C.TEST.FLIP = False  # test-time flip: attribute logits and ReID embeddings averaged over each crop and its mirror
#                      (2x the model's inference cost). Set at training, it is part of the checkpoint's inference
#                      contract (validation, the chosen decision rule, eval, predict, video, ONNX all use it); given to
#                      --mode eval of a checkpoint trained without it, that eval scores with it and says so
_C.TEST.DATASET = ""  # --mode eval on another dataset (cross-domain): a dataset YAML, or a name (PETA = configs/peta.yaml)
#                      whose DATASET section replaces this one's; scores the checkpoint's shipped decisions. A
#                      name equal to RELOAD.DATASET (the model's pretraining saw it): that run's saved split is used
#                      and TEST.SPLIT must be test or val (images the pretraining never trained on)
_C.TEST.ATTR_MAP = ""  # with TEST.DATASET: attribute map (dataset/maps name such as peta_to_native, or a YAML path);
#                       its sources are the dataset's attributes (labels united per target) or the checkpoint's
#                       (decisions OR-ed per target); "" = attributes of the same name
_C.TEST.SUBSET = ""  # with TEST.DATASET: only images under a folder of this name (PETA's subsets: TownCentre, CUHK ...)
_C.TEST.MODEL_FOLDER_NAME = ""  # experiment folder whose best_model.pth is used ("" = NAME)
_C.TEST.PRETRAINED_WEIGHTS = ""  # explicit checkpoint path (wins over MODEL_FOLDER_NAME)
_C.TEST.VIDEO_PATH = ""  # a video file or a folder of videos
_C.TEST.VIDEO_NAME = ""  # only this file inside VIDEO_PATH when it is a folder
_C.TEST.OUTPUT_VIDEO_PATH = "exp_results/videos"  # where annotated videos, JSON and CSV go
_C.TEST.DETECTOR = "auto"  # auto (yolo if YOLO_MODEL else ssdlite) | ssdlite (offline, default) | yolo | hog | file
_C.TEST.DET_FILE = ""  # detector=file: MOT-style text file (frame,id,x,y,w,h,score)
_C.TEST.YOLO_MODEL = ""  # local YOLO weights (.pt); nothing is downloaded
_C.TEST.YOLO_CONF = 0.4  # yolo: detector score threshold (boxes down to min(0.1, it) are kept for ByteTrack)
_C.TEST.CHECK_PER_FRAME = 3  # run the PAR model every N detected frames (3: a track's labels about twice a second
#                             at DETECT_HZ 8; the PAR model costs about as much per frame as the detector)
_C.TEST.DETECT_EVERY = 0  # run the detector (then tracker and PAR) every N frames, the tracks held in between (1 =
#                          every frame; 0 = from the clip's fps: N = round(fps / DETECT_HZ), at least 1)
_C.TEST.DETECT_HZ = 8.0  # with DETECT_EVERY 0: detections per second of video aimed at (25 fps -> every 3rd
#                          frame), never more often than every DETECT_EVERY_MIN-th frame
_C.TEST.DETECT_EVERY_MIN = 2  # with DETECT_EVERY 0: detect at most every N-th frame (2: a 7-10 fps clip every 2nd
#                               frame; with DETECT_HZ 8 this keeps 2 cores at >= 20 fps at 768x576 and >= 10 fps at
#                               1080p: cctv/README.md, "Speed"); 1 lets slow clips be detected on every frame
_C.TEST.OVERLAP = True  # video: decode and detect the next frames in a worker thread while PAR runs on this one
_C.TEST.PAR_RUNTIME = "auto"  # video PAR: auto (onnx on a CPU when onnxruntime is installed) | onnx | torch
_C.TEST.SMOOTHING = "ema"  # ema | window: per-track averaging of probabilities
_C.TEST.EMA_ALPHA = 0.3  # weight of the newest observation (ema)
_C.TEST.WINDOW = 15  # observations averaged (window)
_C.TEST.MIN_BOX_HEIGHT = 48  # smaller person boxes are skipped
_C.TEST.MIN_BOX_WIDTH = 16
_C.TEST.HOG_SCALE = 1.05  # HOG detector pyramid scale
_C.TEST.SSD_SCORE = 0.1  # ssdlite: person boxes scoring below this are dropped (ByteTrack: those under
#                          TEST.TRACK_HIGH_SCORE only continue existing tracks, so low ones are kept)
_C.TEST.SSD_SCALES = [384]  # ssdlite: network input sizes, one pass each, merged by NMS: 300 = TensorFlow's
#                             300x300 squash (as trained); N = the frame at N px along its longer side, aspect
#                             kept, anchors at their trained pixel sizes (finds people 64-128 px tall); 480 finds
#                             more small people at 1.45x the cost
_C.TEST.SSD_SMALL_SCALE = 0  # ssdlite: a clip whose people are small (the median height of its boxes scored >= 0.3,
#                             measured once 12 are seen, under TEST.SSD_SMALL_BELOW of the frame height) switches to
#                             this larger network input for the rest of the clip, detected half as often; 0 = never
#                             (the default: on real footage of small people, vtest.avi, 640 px at half the rate
#                             boxed 21 of 43 hand-counted people against 30 for the fixed input; cctv/README.md)
_C.TEST.SSD_SMALL_BELOW = 0.3
_C.TEST.SSD_MIN_ASPECT = 1.2  # ssdlite: boxes less tall than this x their width are dropped (not a standing or
#                               walking person; the square false boxes of enlarged inputs), unless they touch the
#                               frame's edge; 0 = off
_C.TEST.SSD_NMS = 0.45  # ssdlite: of two person boxes overlapping by more IoU than this, the lower-scored goes
_C.TEST.SSD_TILES = 0  # ssdlite: 0 = whole frame only; N = also N rows of overlapping, about square tiles, for
#                        small people in high-resolution frames (1 + N * round(N * W / H) network runs per frame;
#                        tiles under 150 px are not made)
_C.TEST.SSD_TILE_OVERLAP = 0.25  # ssdlite: each tile grown by this fraction of its size
_C.TEST.TRACK_MATCH_THRESH = 0.95  # ByteTrack's match_thresh: a detection may continue a track while
#                                   1 - IoU x score <= this (0.8 in ByteTrack at 30 fps; looser here because the
#                                   tracker sees every DETECT_EVERY-th frame of 10-25 fps CCTV)
_C.TEST.TRACK_LOST_SECONDS = 2.0  # a lost track is kept this long for its person to reappear before its id retires
_C.TEST.TRACK_APPEARANCE = False  # ids kept by colour (HSV histograms of the box's halves): a new track takes a
#                                  recently lost id nearby that looks the same; two tracks that crossed swap ids
#                                  back when each looks like the other's (cctv/appearance.py)
_C.TEST.TRACK_HIGH_SCORE = 0.3  # ByteTrack's high-score threshold (any detector): boxes above it start (from +0.1)
#                                and continue tracks, boxes between 0.1 and it only continue existing ones
_C.TEST.TRACK_GAP_SECONDS = 1.0  # <stem>_mot.txt: a reported track's gaps up to this long filled by interpolation
_C.TEST.MIN_TRACK_FRAMES = 5  # a track is drawn / written from its N-th tracked frame on; shorter ones are not reported
_C.TEST.STATIC_FILTER = True  # a track that never moves and does not look like a person (HOG) is not reported
_C.TEST.ZONES = []  # polygons [{include: [[x, y], ...]}, {exclude: [[x, y], ...]}] in pixels or 0-1 relative; a
#                     detection counts by its bottom centre: inside an include zone (if any) and no exclude zone
_C.TEST.REPORT = True  # video: also write <stem>_report/index.html (tracks with thumbnail, time span, labels)
_C.TEST.MAX_FRAMES = 0  # stop after N frames (0 = whole video)
_C.TEST.INDEX = "exp_results/footage.sqlite"  # video: ingest every processed video into this footage index (an
#                                              SQLite file, or a postgresql:// URL shared by several machines);
#                                              "" = no index. Media (thumbnails in the index, H.264 videos in
#                                              <index>.media/ or TEST.INDEX_MEDIA) are the index's own
_C.TEST.INDEX_MEDIA = ""  # folder of the index's browser-playable videos ("" = <index file>.media; needed for URLs)
_C.TEST.CAMERA = ""  # video: the camera name stored in the index ("" = the video's parent folder name)
_C.TEST.START_TIME = ""  # video: wall-clock start of the footage, ISO 8601 ("2026-03-01T08:00:00", UTC unless an
#                          offset is given); "" = from the file name (TEST.START_PATTERN), else the container's
#                          creation_time, else the file's modification time (the index records which was used)
_C.TEST.START_PATTERN = r"(?P<Y>\d{4})-?(?P<m>\d{2})-?(?P<d>\d{2})[T_ -]?(?P<H>\d{2})[:.-]?(?P<M>\d{2})[:.-]?(?P<S>\d{2})"
#                          regular expression over the file name with groups Y m d H M S (UTC)
_C.TEST.PREDICT_PATH = ""  # --mode predict: folder of person crops
_C.TEST.PREDICT_CSV = ""  # --mode predict: output CSV ("" = <experiment>/predictions.csv)

# ----------------------------------------------------------------------------- attribute search
_C.SEARCH = CN()
_C.SEARCH.QUERY = ""  # --mode search: conditions joined by commas, e.g. "female, upper_colour=red, Backpack, not Hat"
#                       (attribute names, group=value, not / != ; matched case-insensitively)
_C.SEARCH.IN = ""  # a footage index (an .sqlite file or a postgresql:// URL, see TEST.INDEX), or processed videos
#                    (a <stem>_tracks.json, or a folder searched for them) or a folder of person crops (then scored
#                    by the model); several tracks JSON / crop inputs: comma-separated
_C.SEARCH.EXAMPLE = ""  # --mode search by example: a person crop; candidates ranked by appearance (cosine of the
#                         embeddings of a TASK reid / multitask checkpoint), times P(SEARCH.QUERY) when a query is given
_C.SEARCH.TOP_K = 20  # matches kept in the CSV / JSON and shown on the contact sheet (0 = all; sheet: at most 60)
_C.SEARCH.OUTPUT = "exp_results/search"  # each query writes search.csv, search.json and search_top.png into a new
#                                          folder here: SEARCH.NAME, else <UTC time>_<query>; never over the last
_C.SEARCH.NAME = ""  # the result folder's name under SEARCH.OUTPUT ("" = <UTC time>_<query>; -2, -3 ... if taken)
_C.SEARCH.CAMERA = ""  # index search: only these cameras (comma-separated names; "" = all)
_C.SEARCH.AFTER = ""  # index search: tracks ending at or after this wall-clock time (ISO 8601; "" = no bound)
_C.SEARCH.BEFORE = ""  # index search: tracks starting at or before this time (ISO 8601; "" = no bound)
_C.SEARCH.MIN_SECONDS = 0.0  # index search: only tracks seen at least this long
_C.SEARCH.MIN_SCORE = 0.0  # index search: only results scoring at least this (the web app's confidence slider)

# ----------------------------------------------------------------------------- web app on a footage index
_C.SERVE = CN()
_C.SERVE.HOST = "127.0.0.1"  # --mode serve: the address to listen on; any other than 127.0.0.1 / localhost / ::1
#                              needs SERVE.TOKEN
_C.SERVE.PORT = 8000  # 0 = any free port (the URL printed says which)
_C.SERVE.TOKEN = ""  # access token checked on every request (header "Authorization: Bearer <t>", or ?token=<t>
#                      once, which sets a cookie); "" = none (local address only). Env PAR_SERVE_TOKEN also works
_C.SEARCH.RETRIEVAL_ATTRS = []  # scripts.retrieval_eval: groups / attributes whose combinations are the queries ([] = all)
_C.SEARCH.RETRIEVAL_PROTOCOL = "upar"  # scripts.retrieval_eval: upar (every attribute one binary term, as UPAR defines
#                                        its 40: colours are not exclusive) | groups (exclusive groups take one value);
#                                        both: an unknown label leaves an image out only of the queries its known
#                                        terms match, and the counts of anything left out are printed

# ----------------------------------------------------------------------------- person re-identification
_C.REID = CN()
_C.REID.NUM_INSTANCE = 4  # PK sampler: K images per identity; P = TRAIN.BATCH_SIZE / K identities per batch
_C.REID.POOL = "avg"  # embedding head pooling of the backbone's map: avg | gem
_C.REID.GEM_P = 3.0  # GeM: start value of the learnable exponent p
_C.REID.NECK = "bnneck"  # bnneck (BatchNorm1d with frozen bias; triplet on the feature before it) | none
_C.REID.ID_LOSS = "softmax"  # identity loss: softmax (linear classifier) | cosface | arcface | circle | none
_C.REID.ID_WEIGHT = 1.0
_C.REID.LABEL_SMOOTH = 0.1  # label smoothing eps of the identity cross-entropy (0 = plain CE)
_C.REID.SCALE = 30.0  # cosface / arcface / circle: logit scale s (fast-reid: 30-64)
_C.REID.MARGIN = 0.35  # cosface / arcface / circle: margin m (usual: cosface 0.35, arcface 0.5, circle 0.25)
_C.REID.TRIPLET = "hard"  # batch-hard triplet: hard (with TRIPLET_MARGIN) | soft (soft margin) | none
_C.REID.TRIPLET_MARGIN = 0.3
_C.REID.TRIPLET_WEIGHT = 1.0
_C.REID.TRIPLET_NORM = False  # L2-normalise the features before the triplet distances
_C.REID.CENTER_WEIGHT = 0.0  # center loss weight (0 = off; Bag of Tricks: 0.0005)
_C.REID.METRIC = "cosine"  # retrieval distance: cosine | euclidean (squared L2)
_C.REID.RERANK = False  # k-reciprocal re-ranking of the evaluation distances (Zhong et al. 2017)
_C.REID.RERANK_K1 = 20
_C.REID.RERANK_K2 = 6
_C.REID.RERANK_LAMBDA = 0.3  # weight of the original distance against the Jaccard distance
_C.REID.VIS_QUERIES = 8  # queries drawn in the ranked-list picture (query + top-10, green/red); 0 = none
_C.REID.CENTER_LR = 0.5  # center loss: SGD step of the centers, inside the loss (BoT's separate optimiser, lr 0.5)
_C.REID.TASK_WEIGHT = 1.0  # TASK multitask: weight of the ReID loss (ID + triplet + center) in the total
_C.REID.TASK_WEIGHTING = "fixed"  # TASK multitask: fixed (TASK_WEIGHT / ATTR_WEIGHT) | gradnorm (GradNorm across the
#                                   two tasks, on the backbone's last shared layer, starting from the fixed weights)
_C.REID.GRADNORM_ALPHA = 1.5  # REID.TASK_WEIGHTING gradnorm: restoring-force exponent (Chen et al. 2018)
_C.REID.GRADNORM_LR = 0.025  # REID.TASK_WEIGHTING gradnorm: Adam learning rate of the two task weights
_C.REID.ATTR_WEIGHT = 1.0  # TASK multitask: weight of the attribute loss (the LOSS.* stack) in the total

# ----------------------------------------------------------------------------- distributed
_C.DIST = CN()
_C.DIST.BACKEND = "auto"  # auto (nccl on CUDA, gloo on CPU) | nccl | gloo
_C.DIST.SYNC_BN = True  # SyncBatchNorm under DDP on CUDA

# ----------------------------------------------------------------------------- logging
_C.VIS = CN()
_C.VIS.TENSORBOARD = True  # write TensorBoard events in the experiment folder
_C.VIS.PLOTS = True  # PNG curves and per-attribute bar charts


def get_cfg_defaults() -> CN:
    """A fresh copy of the defaults (never mutate _C itself)."""
    return _C.clone()
