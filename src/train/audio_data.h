// Speech recognition data: JSONL of {"audio": "path", "text": "..."} into Whisper
// examples, as transformers' fine-tuning recipe prepares them: the audio loaded and turned
// into the model folder's WhisperFeatureExtractor input_features (peft/audio.h), the text
// tokenized with the model's tokenizer (its template adds the decoder prompt and
// <|endoftext|>), and a leading decoder_start dropped, as DataCollatorSpeechSeq2SeqWithPadding
// does, since the model puts it back when it shifts the labels right.
#pragma once

#include <string>
#include <vector>

#include "train/data.h"

namespace peft {

// Relative audio paths are relative to the JSONL file's folder. A bad line (missing key,
// unreadable audio, a text longer than the decoder's positions) is an error naming it.
std::vector<Example> load_audio_text_jsonl(const std::string& path, const DataOptions& o);
// True if the file's first non-blank line is a JSON object with an "audio" key.
bool is_audio_jsonl(const std::string& path);

}  // namespace peft
