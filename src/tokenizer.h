/* Tokenizers: SentencePiece-style BPE ("llama": scores, byte fallback <0xNN>, U+2581 for spaces) and
 * byte-level BPE ("gpt2": GPT-2 byte-to-unicode mapping, merges ranked, regex pre-tokenizer chosen by
 * tokenizer.ggml.pre). Vocabulary from GGUF metadata or from a Hugging Face tokenizer.json. */
#ifndef HKV_TOKENIZER_H
#define HKV_TOKENIZER_H
#include <stdint.h>
#include <stddef.h>
#include "heavykv.h"
#include "gguf.h"

typedef enum tok_kind { TOK_SPM = 0, TOK_BPE = 1 } tok_kind;
/* Pre-tokenizer regex sets for byte-level BPE. */
typedef enum tok_pre { TOK_PRE_DEFAULT = 0, TOK_PRE_LLAMA3 = 1, TOK_PRE_QWEN2 = 2, TOK_PRE_GPT2 = 3 } tok_pre;
/* tokenizer.ggml.token_type values */
enum { TOKT_NORMAL = 1, TOKT_UNKNOWN = 2, TOKT_CONTROL = 3, TOKT_USER_DEFINED = 4, TOKT_UNUSED = 5, TOKT_BYTE = 6 };

typedef struct hkv_tokenizer hkv_tokenizer;   /* opaque; defined in tokenizer.c */

/* From GGUF keys tokenizer.ggml.* (model, pre, tokens, scores, token_type, merges, bos/eos/eot/unk/pad ids,
 * add_bos_token, add_eos_token). */
hkv_status tok_load_gguf(const gguf_file *g, hkv_tokenizer **out, char *err, size_t errlen);
/* From a Hugging Face tokenizer.json (+ tokenizer_config.json in the same folder, if present). */
hkv_status tok_load_hf(const char *tokenizer_json_path, hkv_tokenizer **out, char *err, size_t errlen);
void tok_free(hkv_tokenizer *t);

int tok_n_vocab(const hkv_tokenizer *t);
tok_kind tok_get_kind(const hkv_tokenizer *t);
int32_t tok_bos(const hkv_tokenizer *t);   /* -1 if none */
int32_t tok_eos(const hkv_tokenizer *t);
int tok_add_bos(const hkv_tokenizer *t);   /* whether encoding adds BOS by default */
int tok_is_eog(const hkv_tokenizer *t, int32_t id); /* EOS, EOT, <|im_end|>, <|eot_id|>, ... */
const char *tok_text(const hkv_tokenizer *t, int32_t id); /* raw vocab string (NUL-terminated), NULL if bad id */
/* The chat template text (GGUF tokenizer.chat_template, or chat_template of tokenizer_config.json), NULL if none. */
const char *tok_chat_template(const hkv_tokenizer *t);

/* Same contracts as hkv_tokenize / hkv_token_to_piece / hkv_detokenize in heavykv.h. add_bos: -1 the
 * vocabulary's add_bos_token, 1 always (when there is a BOS id), 0 never; unless 0, EOS is appended when the
 * vocabulary asks for it (add_eos_token). SentencePiece: every text fragment (the
 * start, and the text after each special token) gets the U+2581 dummy prefix, as llama.cpp and HF do. Control
 * tokens decode to nothing; tok_decode drops one leading space of the token at index 0 (1 after BOS). */
int tok_encode(const hkv_tokenizer *t, const char *text, int add_bos, int parse_special, int32_t *out, int max);
int tok_piece(const hkv_tokenizer *t, int32_t id, char *buf, int buflen);
int tok_decode(const hkv_tokenizer *t, const int32_t *ids, int n, char *buf, int buflen);

/* Same contract as hkv_utf8_stream_push: appends token's bytes to the stream, writes the longest complete UTF-8
 * prefix into out (NUL-terminated) and returns its length; an incomplete character at the end is held back for
 * the next token; bytes that can never form a character become U+FFFD. If out is too small, returns minus the
 * size needed (including NUL) and leaves the stream unchanged. */
int tok_utf8_stream_push(hkv_utf8_stream *s, const hkv_tokenizer *t, int32_t token, char *out, int outlen);
/* End of stream: held-back bytes (an unfinished character) come out as U+FFFD; the stream is emptied. Same
 * return convention as tok_utf8_stream_push. */
int tok_utf8_stream_flush(hkv_utf8_stream *s, char *out, int outlen);

/* Writes the tokenizer.ggml.* keys llama.cpp's converter writes (model, pre, tokens, scores, token_type, merges,
 * special ids, add_bos/add_eos, chat_template) so a synthetic model carries a real tokenizer. */
void tok_write_gguf(const hkv_tokenizer *t, gguf_writer *w);
#endif
