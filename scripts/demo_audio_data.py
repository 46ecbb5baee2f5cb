"""Spoken digits for a Whisper demo, synthesized here with espeak-ng, nothing downloaded.

Usage: demo_audio_data.py OUT_DIR

Speaks "zero" .. "nine" with Debian's espeak-ng (package espeak-ng, installed by
scripts/setup.sh) in several English voices, voice variants, speeds and pitches, and writes
  OUT_DIR/{train,eval}/<word>_<voice>_<variant>_s<speed>_p<pitch>.wav: mono 16-bit WAV at
      espeak-ng's 22050 Hz (`peft preprocess-audio` and training resample them to 16 kHz);
  OUT_DIR/{train,eval}.jsonl: {"audio": "<split>/<file>.wav", "text": "seven"}, paths
      relative to the JSONL file.

The eval split is every utterance of one accent the training split never hears
(Caribbean English, en-029), so eval measures recognition of a new voice, not recall of
the training files.

For the adaptation demo (scripts/demo_audio.sh) it also writes, from the training files:
  OUT_DIR/base.jsonl: the American English (en-us) ones, to pretrain a base on;
  OUT_DIR/adapt_train.jsonl: the three British accents at pitch 35, to adapt it with;
  OUT_DIR/adapt_eval.jsonl: the same accents at pitch 65, recordings the adapter never hears. 4 voices x 3 variants x 2 speeds x 2 pitches = 48 training and 12 eval
utterances per digit (480 and 120 files, about 25 MB, one to two minutes to make).

espeak-ng runs from an argv list, never through a shell.
"""
import json
import os
import shutil
import subprocess
import sys

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TRAIN_VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp"]
EVAL_VOICES = ["en-029"]
VARIANTS = ["m1", "m3", "f2"]  # espeak-ng voice variants: two male, one female
SPEEDS = [130, 175]  # words per minute
PITCHES = [35, 65]  # 0-99, espeak-ng's default is 50


def speak(word, voice, variant, speed, pitch, path):
    argv = ["espeak-ng", "-v", f"{voice}+{variant}", "-s", str(speed), "-p", str(pitch), "-w", path, word]
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def write_split(out, split, voices):
    os.makedirs(os.path.join(out, split), exist_ok=True)
    rows = []
    for word in WORDS:
        for voice in voices:
            for variant in VARIANTS:
                for speed in SPEEDS:
                    for pitch in PITCHES:
                        rel = f"{split}/{word}_{voice}_{variant}_s{speed}_p{pitch}.wav"
                        speak(word, voice, variant, speed, pitch, os.path.join(out, rel))
                        rows.append({"audio": rel, "text": word})
    with open(os.path.join(out, split + ".jsonl"), "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return len(rows)


def write_adaptation_splits(out):
    with open(os.path.join(out, "train.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    splits = {"base": lambda a: "_en-us_" in a,
              "adapt_train": lambda a: "_en-us_" not in a and a.endswith(f"_p{PITCHES[0]}.wav"),
              "adapt_eval": lambda a: "_en-us_" not in a and a.endswith(f"_p{PITCHES[1]}.wav")}
    for name, keep in splits.items():
        with open(os.path.join(out, name + ".jsonl"), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows if keep(r["audio"]))


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__.split("\n\n")[1])
    if shutil.which("espeak-ng") is None:
        sys.exit("espeak-ng not found: apt-get install espeak-ng (scripts/setup.sh installs it)")
    out = sys.argv[1]
    n_train = write_split(out, "train", TRAIN_VOICES)
    n_eval = write_split(out, "eval", EVAL_VOICES)
    write_adaptation_splits(out)
    print(f"wrote {n_train} training and {n_eval} eval utterances of {len(WORDS)} digits to {out}")


if __name__ == "__main__":
    main()
