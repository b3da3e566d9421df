/* heavykv command line: dispatches to one subcommand per cli/cmd_*.c. */
#include <stdio.h>
#include <string.h>
#include "cli.h"

typedef struct command { const char *name; int (*fn)(int, char **); const char *help; } command;

static const command commands[] = {
    {"run", cmd_run, "generate text from a prompt with a bounded KV cache"},
    {"info", cmd_info, "print a GGUF file's metadata and tensor table"},
    {"bench", cmd_bench, "measure prompt/generation speed and KV memory per policy, budget and batch"},
};
#define N_COMMANDS (int)(sizeof commands / sizeof commands[0])

static void usage(FILE *f) {
    fprintf(f, "usage: heavykv COMMAND [options]   (heavykv COMMAND --help for each)\n\ncommands:\n");
    for (int i = 0; i < N_COMMANDS; i++) fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].help);
}

int main(int argc, char **argv) {
    if (argc < 2) { usage(stderr); return 1; }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) { usage(stdout); return 0; }
    for (int i = 0; i < N_COMMANDS; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
    cli_error("unknown command '%s' (run 'heavykv --help' for the list)", argv[1]);
    return 1;
}
