/* Chat templates: each family's rendering of one system + user + assistant + user conversation against the
 * text its published template produces (written out by hand below from the Jinja source of each family's
 * official template, leading bos_token left to the tokenizer), family recognition from template texts (the real
 * tokenizer_config.json files in ../shared and hand-written excerpts), the template surviving
 * tokenizer.json -> GGUF, error cases, and the buffer-size contract. */
#include "testutil.h"
#include "heavykv.h"
#include "tokenizer.h"
#include "gguf.h"
#include <stdlib.h>
#include <string.h>

static const hkv_chat_message CONV[] = {
    {"system", "You are a helpful assistant."},
    {"user", "Hello"},
    {"assistant", "Hi there!"},
    {"user", "How are you?"},
};
#define NCONV 4

typedef struct expect { const char *family, *with_gen, *without_gen; } expect;

static const expect EXPECTED[] = {
    {"chatml",
     "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
     "<|im_start|>assistant\nHi there!<|im_end|>\n<|im_start|>user\nHow are you?<|im_end|>\n"
     "<|im_start|>assistant\n",
     "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
     "<|im_start|>assistant\nHi there!<|im_end|>\n<|im_start|>user\nHow are you?<|im_end|>\n"},
    {"llama3",
     "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>"
     "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
     "<|start_header_id|>assistant<|end_header_id|>\n\nHi there!<|eot_id|>"
     "<|start_header_id|>user<|end_header_id|>\n\nHow are you?<|eot_id|>"
     "<|start_header_id|>assistant<|end_header_id|>\n\n",
     "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>"
     "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
     "<|start_header_id|>assistant<|end_header_id|>\n\nHi there!<|eot_id|>"
     "<|start_header_id|>user<|end_header_id|>\n\nHow are you?<|eot_id|>"},
    /* Meta's Llama 2 template has no generation prompt: both renderings are the same */
    {"llama2",
     "[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\nHello [/INST] Hi there! </s><s>[INST] How are you? [/INST]",
     "[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\nHello [/INST] Hi there! </s><s>[INST] How are you? [/INST]"},
    {"mistral",
     "[INST] You are a helpful assistant.\n\nHello [/INST]Hi there!</s>[INST] How are you? [/INST]",
     "[INST] You are a helpful assistant.\n\nHello [/INST]Hi there!</s>[INST] How are you? [/INST]"},
    {"gemma",
     "<start_of_turn>user\nYou are a helpful assistant.\n\nHello<end_of_turn>\n<start_of_turn>model\nHi there!<end_of_turn>\n"
     "<start_of_turn>user\nHow are you?<end_of_turn>\n<start_of_turn>model\n",
     "<start_of_turn>user\nYou are a helpful assistant.\n\nHello<end_of_turn>\n<start_of_turn>model\nHi there!<end_of_turn>\n"
     "<start_of_turn>user\nHow are you?<end_of_turn>\n"},
    {"phi3",
     "<|system|>\nYou are a helpful assistant.<|end|>\n<|user|>\nHello<|end|>\n<|assistant|>\nHi there!<|end|>\n"
     "<|user|>\nHow are you?<|end|>\n<|assistant|>\n",
     "<|system|>\nYou are a helpful assistant.<|end|>\n<|user|>\nHello<|end|>\n<|assistant|>\nHi there!<|end|>\n"
     "<|user|>\nHow are you?<|end|>\n<|endoftext|>"},
    {"zephyr",
     "<|system|>\nYou are a helpful assistant.</s>\n<|user|>\nHello</s>\n<|assistant|>\nHi there!</s>\n"
     "<|user|>\nHow are you?</s>\n<|assistant|>\n",
     "<|system|>\nYou are a helpful assistant.</s>\n<|user|>\nHello</s>\n<|assistant|>\nHi there!</s>\n"
     "<|user|>\nHow are you?</s>\n"},
};
#define NEXP (int)(sizeof EXPECTED / sizeof EXPECTED[0])

static void test_families(void) {
    char buf[2048];
    int n_names = 0;
    for (const char *const *p = hkv_chat_template_names(); *p; p++) n_names++;
    CHECK(n_names == NEXP);
    for (int i = 0; i < NEXP; i++) {
        const expect *e = &EXPECTED[i];
        int n = hkv_chat_apply_template(NULL, e->family, CONV, NCONV, 1, buf, sizeof buf);
        CHECKF(n == (int)strlen(e->with_gen) && strcmp(buf, e->with_gen) == 0, "%s:\n got [%s]\nwant [%s]",
               e->family, n > 0 ? buf : "(error)", e->with_gen);
        n = hkv_chat_apply_template(NULL, e->family, CONV, NCONV, 0, buf, sizeof buf);
        CHECKF(n == (int)strlen(e->without_gen) && strcmp(buf, e->without_gen) == 0, "%s (no gen):\n got [%s]\nwant [%s]",
               e->family, n > 0 ? buf : "(error)", e->without_gen);
    }
}

/* Whitespace: llama3/gemma/llama2 trim content (|trim, .strip()), chatml/phi3/zephyr/mistral keep it. */
static void test_trim(void) {
    const hkv_chat_message m[] = {{"user", "  Hi \n"}};
    char buf[256];
    hkv_chat_apply_template(NULL, "llama3", m, 1, 0, buf, sizeof buf);
    CHECK(strcmp(buf, "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>") == 0);
    hkv_chat_apply_template(NULL, "gemma", m, 1, 0, buf, sizeof buf);
    CHECK(strcmp(buf, "<start_of_turn>user\nHi<end_of_turn>\n") == 0);
    hkv_chat_apply_template(NULL, "llama2", m, 1, 0, buf, sizeof buf);
    CHECK(strcmp(buf, "[INST] Hi [/INST]") == 0);
    hkv_chat_apply_template(NULL, "chatml", m, 1, 0, buf, sizeof buf);
    CHECK(strcmp(buf, "<|im_start|>user\n  Hi \n<|im_end|>\n") == 0);
    /* llama2 without a system message, two user turns: later turns carry their own <s> */
    const hkv_chat_message two[] = {{"user", "A"}, {"assistant", "B"}, {"user", "C"}};
    hkv_chat_apply_template(NULL, "llama2", two, 3, 1, buf, sizeof buf);
    CHECK(strcmp(buf, "[INST] A [/INST] B </s><s>[INST] C [/INST]") == 0);
    hkv_chat_apply_template(NULL, "mistral", two, 3, 1, buf, sizeof buf);
    CHECK(strcmp(buf, "[INST] A [/INST]B</s>[INST] C [/INST]") == 0);
}

/* Excerpts of the published templates (only what recognition looks at is guaranteed to be there). */
static void test_detect(void) {
    CHECK(strcmp(hkv_chat_template_detect("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' "
                                          "+ message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"), "chatml") == 0);
    CHECK(strcmp(hkv_chat_template_detect("{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' "
                                          "+ message['content'] | trim + '<|eot_id|>' }}"), "llama3") == 0);
    CHECK(strcmp(hkv_chat_template_detect("{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
                                          "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' %}"),
                 "llama2") == 0);
    CHECK(strcmp(hkv_chat_template_detect("{{ bos_token }}{% for message in messages %}{% if message['role'] == "
                                          "'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% endif %}"),
                 "mistral") == 0);
    CHECK(strcmp(hkv_chat_template_detect("{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + "
                                          "'<end_of_turn>\\n' }}"), "gemma") == 0);
    CHECK(strcmp(hkv_chat_template_detect("{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}{{ '<|assistant|>\\n' }}"),
                 "phi3") == 0);
    CHECK(strcmp(hkv_chat_template_detect("{{ '<|user|>\\n' + message['content'] + eos_token }}{{ '<|assistant|>' }}"),
                 "zephyr") == 0);
    CHECK(hkv_chat_template_detect("{{ message['content'] }}") == NULL);
    CHECK(hkv_chat_template_detect(NULL) == NULL);
}

/* The real tokenizer_config.json files: Qwen3's (ChatML with tools/thinking) and Llama 3's are recognised;
 * the llama2 folder has none. The template is kept through tok_write_gguf -> tok_load_gguf (what synth does). */
static void test_real_configs(void) {
    const char *dirs[] = {"tokenizers/qwen3/tokenizer.json", "tokenizers/llama3/tokenizer.json",
                          "tokenizers/llama2/tokenizer.json"};
    const char *want[] = {"chatml", "llama3", NULL};
    char err[256];
    for (int i = 0; i < 3; i++) {
        hkv_tokenizer *t = NULL;
        hkv_status st = tok_load_hf(tu_shared(dirs[i]), &t, err, sizeof err);
        CHECKF(st == HKV_OK, "%s: %s", dirs[i], err);
        if (st) continue;
        const char *tmpl = tok_chat_template(t);
        const char *fam = hkv_chat_template_detect(tmpl);
        CHECKF(want[i] ? fam && strcmp(fam, want[i]) == 0 : tmpl == NULL, "%s: %s", dirs[i], fam ? fam : "none");
        if (i == 0) {   /* round trip through a GGUF file */
            gguf_writer *w = gguf_writer_new();
            gguf_w_str(w, "general.architecture", "llama");
            tok_write_gguf(t, w);
            const char *path = tu_tmp("chat_tok.gguf");
            CHECK(gguf_writer_write(w, path, err, sizeof err) == HKV_OK);
            gguf_writer_free(w);
            gguf_file *g = NULL;
            hkv_tokenizer *t2 = NULL;
            CHECK(gguf_open(path, &g, err, sizeof err) == HKV_OK);
            if (g && tok_load_gguf(g, &t2, err, sizeof err) == HKV_OK) {
                CHECK(tok_chat_template(t2) && strcmp(tok_chat_template(t2), tmpl) == 0);
                tok_free(t2);
            } else CHECKF(0, "%s", err);
            gguf_close(g);
            remove(path);
        }
        tok_free(t);
    }
}

static void test_errors(void) {
    char err[256], buf[64];
    const char *fam = NULL;
    hkv_model *m = NULL;
    /* stories260K has no template: a clear error unless one is named */
    if (hkv_model_load(tu_model(), NULL, &m, err, sizeof err) == HKV_OK) {
        CHECK(hkv_model_chat_template(m) == NULL);
        CHECK(hkv_chat_template_check(m, NULL, NULL, 0, &fam, err, sizeof err) == HKV_ERR_UNSUPPORTED);
        CHECK(strstr(err, "no chat template") != NULL);
        CHECK(hkv_chat_apply_template(m, NULL, CONV, NCONV, 1, buf, sizeof buf) == HKV_CHAT_ERROR);
        CHECK(hkv_chat_template_check(m, "chatml", CONV, NCONV, &fam, err, sizeof err) == HKV_OK);
        CHECK(fam && strcmp(fam, "chatml") == 0);
        hkv_model_free(m);
    } else CHECKF(0, "%s", err);
    CHECK(hkv_chat_template_check(NULL, "chatmlx", NULL, 0, NULL, err, sizeof err) == HKV_ERR_ARG);
    CHECK(strstr(err, "unknown chat template") != NULL);
    CHECK(hkv_chat_template_check(NULL, "{{ message['content'] }}", NULL, 0, NULL, err, sizeof err) == HKV_ERR_UNSUPPORTED);
    CHECK(strstr(err, "not one of the recognised") != NULL);
    CHECK(hkv_chat_template_check(NULL, "{{'<|im_start|>'}}", NULL, 0, &fam, err, sizeof err) == HKV_OK);
    CHECK(strcmp(fam, "chatml") == 0);
    const hkv_chat_message bad_role[] = {{"tool", "x"}};
    CHECK(hkv_chat_template_check(NULL, "chatml", bad_role, 1, NULL, err, sizeof err) == HKV_ERR_ARG);
    CHECK(hkv_chat_apply_template(NULL, "chatml", bad_role, 1, 1, buf, sizeof buf) == HKV_CHAT_ERROR);
    const hkv_chat_message null_content[] = {{"user", NULL}};
    CHECK(hkv_chat_apply_template(NULL, "chatml", null_content, 1, 1, buf, sizeof buf) == HKV_CHAT_ERROR);
    const hkv_chat_message late_sys[] = {{"user", "a"}, {"system", "b"}};
    CHECK(hkv_chat_template_check(NULL, "gemma", late_sys, 2, NULL, err, sizeof err) == HKV_ERR_ARG);
    CHECK(hkv_chat_template_check(NULL, "chatml", late_sys, 2, NULL, err, sizeof err) == HKV_OK);
    CHECK(hkv_chat_apply_template(NULL, "chatml", CONV, -1, 1, buf, sizeof buf) == HKV_CHAT_ERROR);
}

/* Too small a buffer: minus the size needed (with NUL), a terminated prefix; exactly enough: success. */
static void test_sizes(void) {
    const char *want = EXPECTED[0].with_gen;
    int need = (int)strlen(want) + 1;
    char small[16];
    CHECK(hkv_chat_apply_template(NULL, "chatml", CONV, NCONV, 1, small, sizeof small) == -need);
    CHECK(strlen(small) == sizeof small - 1 && strncmp(small, want, sizeof small - 1) == 0);
    CHECK(hkv_chat_apply_template(NULL, "chatml", CONV, NCONV, 1, NULL, 0) == -need);
    char *buf = malloc((size_t)need);
    CHECK(hkv_chat_apply_template(NULL, "chatml", CONV, NCONV, 1, buf, need) == need - 1);
    CHECK(strcmp(buf, want) == 0);
    CHECK(hkv_chat_apply_template(NULL, "chatml", CONV, NCONV, 1, buf, need - 1) == -need);
    free(buf);
}

int main(void) {
    test_families();
    test_trim();
    test_detect();
    test_real_configs();
    test_errors();
    test_sizes();
    return tu_done("test_chat");
}
