// Chat formatting for instruction data, without a Jinja engine: the two role-marker
// formats most chat models use, rendered exactly as their HF chat templates render them.
//
//   ChatML  (Qwen, many fine-tunes): <|im_start|>role\ncontent<|im_end|>\n ...
//   Llama-3:                         <|begin_of_text|><|start_header_id|>role<|end_header_id|>\n\n
//                                    content (trimmed)<|eot_id|> ...
// Other templates (Llama-2 [INST], Mistral, Gemma, ...) are not supported: detect_chat_format
// returns nothing for them.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace peft {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant", ...
  std::string content;
};

enum class ChatFormat { kChatML, kLlama3 };

// The text of the conversation; with add_generation_prompt, the opening of an assistant turn.
std::string apply_chat_template(ChatFormat format, const std::vector<ChatMessage>& messages,
                                bool add_generation_prompt, const std::string& bos_token = "<|begin_of_text|>");

// Which supported format a tokenizer_config.json "chat_template" string is, if any.
std::optional<ChatFormat> detect_chat_format(const std::string& jinja_template);

}  // namespace peft
