/* heavykv command line: dispatches to one subcommand per cli/cmd_*.c. */
#include <stdio.h>
#include <string.h>
#include "cli.h"

typedef struct command { const char *name; int (*fn)(int, char **); const char *help; } command;

static const command commands[] = {
    {"run", cmd_run, "generate text from a prompt with a bounded KV cache"},
    {"chat", cmd_chat, "interactive chat (chat templates; the cache is kept between turns)"},
    {"info", cmd_info, "print a GGUF file's metadata and tensor table"},
    {"bench", cmd_bench, "measure prompt/generation speed and KV memory per policy, budget and batch"},
    {"tokenize", cmd_tokenize, "text -> token ids (a model's or a tokenizer.json's tokenizer)"},
    {"detokenize", cmd_detokenize, "token ids -> text"},
    {"quantize", cmd_quantize, "convert a GGUF model's weights to F16/Q8_0/Q4_0/Q5_0/Q4_K/Q5_K/Q6_K/Q4_K_M"},
    {"synth", cmd_synth, "write a model of a real architecture and shape with random weights"},
    {"eval", cmd_eval, "measure quality lost to KV eviction: ppl, fidelity, mc, passkey"},
    {"serve", cmd_serve, "HTTP server (OpenAI-style completions) with batched decoding"},
    {"kv-inspect", cmd_kv_inspect, "SVG heatmap of the positions each layer/head kept over time"},
};
#define N_COMMANDS (int)(sizeof commands / sizeof commands[0])

static void usage(FILE *f) {
    fprintf(f, "usage: heavykv COMMAND [options]   (heavykv COMMAND --help for each; --version for the version)\n\ncommands:\n");
    for (int i = 0; i < N_COMMANDS; i++) fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].help);
}

int main(int argc, char **argv) {
    if (argc < 2) { usage(stderr); return 1; }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) { usage(stdout); return 0; }
    /* heavykv --version, heavykv COMMAND --version: the version of the library this program runs on */
    int version = !strcmp(argv[1], "--version");
    for (int i = 0; i < N_COMMANDS && !version; i++)
        if (!strcmp(argv[1], commands[i].name)) {
            if (argc > 2 && !strcmp(argv[2], "--version")) version = 1;
            else return commands[i].fn(argc - 1, argv + 1);
        }
    if (version) {
        printf("heavykv %s\n", hkv_version());
        return 0;
    }
    cli_error("unknown command '%s' (run 'heavykv --help' for the list)", argv[1]);
    return 1;
}
