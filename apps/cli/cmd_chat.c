/* heavykv chat: an interactive conversation in the terminal. The KV cache is kept between turns: each turn
 * renders the whole conversation with the chat template but feeds the model only the text after the previous
 * reply (the reply's end marker, the new user turn and the assistant header), so the history is never
 * prefilled again. With a bounded policy (h2o, sink, window, tova) the cache holds at most the budget, so a
 * conversation goes on in constant memory; only positions keep growing, up to the context length (-c). */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "cli.h"

typedef struct chat_opts {
    const char *model, *system, *tmpl;
    int n_predict, n_threads, n_ctx, ignore_eos, kv_stats, bos, show_prompt;
    hkv_sampler_params sp;
    hkv_kv_config kv;
} chat_opts;

/* Set by the SIGINT handler, read between generated tokens and after an interrupted read. */
static volatile sig_atomic_t g_interrupted;

static void on_sigint(int sig) { (void)sig; g_interrupted = 1; }

static void chat_help(void) {
    printf("usage: heavykv chat [-m MODEL.gguf] [-sys PROMPT] [options]\n\n"
           "Interactive chat: type a message and press Enter; the reply streams to stdout. The KV cache is kept\n"
           "between turns (only the new turn is prefilled), so with a bounded --kv-policy the conversation runs\n"
           "in constant memory. Commands: /reset (forget the conversation, keep the system prompt), /exit.\n"
           "Ctrl-C stops a reply; Ctrl-C twice at the prompt, or Ctrl-D, exits.\n\n"
           "  -m, --model PATH      GGUF model (default $HEAVYKV_MODEL or ../shared/models/stories260K.gguf)\n"
           "  -sys, --system TEXT   system prompt\n"
           "      --chat-template NAME  chatml | llama3 | llama2 | mistral | gemma | phi3 | zephyr\n"
           "                        (default: recognised from the model's tokenizer.chat_template)\n"
           "  -n, --n-predict N     max tokens per reply (default 512)\n"
           "  -c, --ctx-size N      context length = the largest position a conversation can reach (default:\n"
           "                        the model's, at most 4096); with a bounded policy it costs no memory\n"
           "  -t, --threads N       worker threads (default: all cores)\n"
           "      --temp T          temperature; 0 = greedy (default 0.8)\n"
           "      --top-k K         (default 40; 0 = off)\n"
           "      --top-p P         (default 0.95; 1 = off)\n"
           "      --min-p P         (default 0.05; 0 = off)\n"
           "      --repeat-penalty R  (default 1.0 = off)   --repeat-last-n N (default 64)\n"
           "  -s, --seed S          sampling seed (default 0)\n"
           "      --ignore-eos      keep generating after end-of-generation tokens (up to -n)\n"
           "      --bos / --no-bos  force / suppress the BOS token at the start of the conversation\n"
           "                        (default: the model's tokenizer.ggml.add_bos_token)\n"
           "      --kv-stats        after each reply: tokens prefilled, position, cache occupancy and memory\n"
           "      --show-prompt     print the text fed to the model each turn (stderr)\n\n%s",
           cli_kv_help());
}

/* Returns 0 ok, 1 error, 2 help shown. */
static int parse_chat(int argc, char **argv, chat_opts *o) {
    memset(o, 0, sizeof *o);
    o->model = cli_default_model();
    o->n_predict = 512;
    o->bos = -1;
    o->sp = hkv_sampler_default_params();
    o->kv = hkv_kv_default_config();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        int r = cli_kv_flag(argc, argv, &i, &o->kv);
        if (r == 0) r = cli_sampler_flag(argc, argv, &i, &o->sp);
        if (r < 0) return 1;
        if (r > 0) continue;
#define VAL() do { if (!(v = cli_value(argc, argv, &i))) return 1; } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { chat_help(); return 2; }
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) { VAL(); o->model = v; }
        else if (!strcmp(a, "-sys") || !strcmp(a, "--system")) { VAL(); o->system = v; }
        else if (!strcmp(a, "--chat-template")) { VAL(); o->tmpl = v; }
        else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) { VAL(); if (!cli_int(a, v, 1, 1 << 24, &o->n_predict)) return 1; }
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size")) { VAL(); if (!cli_int(a, v, 0, 1 << 30, &o->n_ctx)) return 1; }
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { VAL(); if (!cli_int(a, v, 1, 1024, &o->n_threads)) return 1; }
        else if (!strcmp(a, "--ignore-eos")) o->ignore_eos = 1;
        else if (cli_bos_flag(a, &o->bos)) continue;
        else if (!strcmp(a, "--kv-stats")) o->kv_stats = 1;
        else if (!strcmp(a, "--show-prompt")) o->show_prompt = 1;
        else return cli_error("unknown option '%s' for 'chat' (see heavykv chat --help)", a);
#undef VAL
    }
    return 0;
}

/* ---------------------------------------------------------------- the conversation */

/* Marks where the last reply sits in a rendering: the text after it is what the cache does not hold yet. No
 * template trims or rewrites it (control bytes, no whitespace). */
static const char SENTINEL[] = "\x01hkv-reply\x01";

typedef struct chat_state {
    hkv_model *m;
    hkv_context *c;
    hkv_sampler *smp;
    hkv_model_info mi;
    const chat_opts *o;
    const char *family;
    int add_bos;
    hkv_chat_message *msgs;  /* [cap] the conversation; contents malloc'ed (roles are literals) */
    int n_msgs, cap;
    int n_ctx;
    int turn;                /* replies since the start or the last /reset */
    long prefilled_total;    /* tokens prefilled since the start or the last /reset */
} chat_state;

static int push_msg(chat_state *s, const char *role, const char *content, size_t len) {
    if (s->n_msgs == s->cap) {
        int cap = s->cap ? 2 * s->cap : 16;
        hkv_chat_message *p = realloc(s->msgs, sizeof *p * (size_t)cap);
        if (!p) return 0;
        s->msgs = p;
        s->cap = cap;
    }
    char *c = malloc(len + 1);
    if (!c) return 0;
    memcpy(c, content, len);
    c[len] = 0;
    s->msgs[s->n_msgs].role = role;
    s->msgs[s->n_msgs].content = c;
    s->n_msgs++;
    return 1;
}

static void pop_msg(chat_state *s) { free((char *)s->msgs[--s->n_msgs].content); }

/* Back to the start: only the system prompt remains, the cache is empty. */
static void reset_conversation(chat_state *s) {
    while (s->n_msgs > (s->o->system ? 1 : 0)) pop_msg(s);
    hkv_seq_reset(s->c, 0);
    hkv_sampler *fresh;   /* forgets the penalty history; on failure the old sampler stays (still valid) */
    if (hkv_sampler_new(&s->o->sp, s->mi.n_vocab, &fresh, NULL, 0) == HKV_OK) {
        hkv_sampler_free(s->smp);
        s->smp = fresh;
    }
    s->turn = 0;
    s->prefilled_total = 0;
}

/* The text the model has not seen yet: the whole rendering on the first turn, afterwards what follows the
 * last reply (rendered with SENTINEL in its place). malloc'ed, or NULL with an error printed. */
static char *pending_text(chat_state *s) {
    int last_reply = -1;
    for (int i = s->n_msgs - 1; i >= 0 && hkv_n_past(s->c, 0) > 0; i--)
        if (!strcmp(s->msgs[i].role, "assistant")) { last_reply = i; break; }
    const char *saved = last_reply >= 0 ? s->msgs[last_reply].content : NULL;
    if (last_reply >= 0) s->msgs[last_reply].content = SENTINEL;
    int n = hkv_chat_apply_template(s->m, s->o->tmpl, s->msgs, s->n_msgs, 1, NULL, 0);
    char *text = n < 0 && n != HKV_CHAT_ERROR ? malloc((size_t)-n) : NULL;
    if (text) hkv_chat_apply_template(s->m, s->o->tmpl, s->msgs, s->n_msgs, 1, text, -n);
    if (last_reply >= 0) s->msgs[last_reply].content = saved;
    if (!text) {
        char err[256];
        if (hkv_chat_template_check(s->m, s->o->tmpl, s->msgs, s->n_msgs, NULL, err, sizeof err) == HKV_OK)
            snprintf(err, sizeof err, "out of memory rendering the conversation");
        cli_error("%s", err);
        return NULL;
    }
    if (last_reply >= 0) {
        const char *after = strstr(text, SENTINEL);
        if (!after) { free(text); cli_error("the %s template dropped the last reply", s->family); return NULL; }
        after += sizeof SENTINEL - 1;
        memmove(text, after, strlen(after) + 1);
    }
    return text;
}

/* Tokens of text, with BOS first when the cache is empty and BOS is wanted. Chat never appends EOS (the
 * template closes turns itself), so BOS is added here rather than by hkv_tokenize. */
static int32_t *tokenize_turn(chat_state *s, const char *text, int *n_out) {
    int bos = hkv_n_past(s->c, 0) == 0 && s->add_bos && s->mi.bos >= 0;
    int cap = (int)strlen(text) + 2;
    int32_t *toks = malloc(sizeof(int32_t) * (size_t)cap);
    if (!toks) return NULL;
    if (bos) toks[0] = s->mi.bos;
    int n = hkv_tokenize(s->m, text, 0, 1, toks + bos, cap - bos);
    if (n < 0) { free(toks); return NULL; }   /* cannot happen: at most one token per byte */
    *n_out = n + bos;
    return toks;
}

static void print_turn_stats(chat_state *s, int prefilled, int generated) {
    hkv_kv_stats st;
    hkv_get_kv_stats(s->c, &st);
    fprintf(stderr, "kv: turn %d | prefill %d tokens (total %ld) | generated %d | position %d / %d | occupancy %d..%d of "
            "%d slots per head | K/V %.2f MiB + meta %.2f MiB | evictions %llu\n",
            s->turn, prefilled, s->prefilled_total, generated, hkv_n_past(s->c, 0), s->n_ctx, st.occupancy_min,
            st.occupancy_max, st.capacity, st.kv_bytes / 1048576.0, st.meta_bytes / 1048576.0,
            (unsigned long long)st.evictions);
}

/* Generates one reply (streamed); its text is appended to the conversation. Returns the number of tokens
 * generated, or -1 on an engine error (the conversation is reset). */
static int reply(chat_state *s) {
    char out[256];
    hkv_utf8_stream us = {0};
    size_t len = 0, cap = 256;
    char *text = malloc(cap);
    int n_gen = 0, stop_ctx = 0;
    g_interrupted = 0;
    while (text && n_gen < s->o->n_predict && !g_interrupted) {
        if (hkv_n_past(s->c, 0) >= s->n_ctx) { stop_ctx = 1; break; }
        int32_t tok = hkv_sampler_sample(s->smp, hkv_get_logits(s->c, 0, -1));
        if (!s->o->ignore_eos && hkv_token_is_eog(s->m, tok)) break;
        int k = hkv_utf8_stream_push(&us, s->m, tok, out, sizeof out);
        if (k > 0) {
            fwrite(out, 1, (size_t)k, stdout);
            fflush(stdout);
            if (len + (size_t)k + 1 > cap) {
                char *p = realloc(text, cap = 2 * (len + (size_t)k + 1));
                if (!p) { free(text); text = NULL; break; }
                text = p;
            }
            memcpy(text + len, out, (size_t)k);
            len += (size_t)k;
        }
        /* the cache must hold every token of the reply, the last one too: the next turn continues after it */
        if (hkv_decode(s->c, 0, &tok, 1)) {
            fputc('\n', stdout);
            cli_error("%s; the conversation is reset", hkv_last_error(s->c));
            free(text);
            reset_conversation(s);
            return -1;
        }
        n_gen++;
    }
    fputc('\n', stdout);
    fflush(stdout);
    if (g_interrupted) fprintf(stderr, "(interrupted)\n");
    if (stop_ctx) fprintf(stderr, "(the conversation reached the context length %d: /reset to start over, or use a "
                          "larger -c)\n", s->n_ctx);
    g_interrupted = 0;
    if (!text || !push_msg(s, "assistant", text, len)) {
        free(text);
        cli_error("out of memory keeping the reply; the conversation is reset");
        reset_conversation(s);
        return -1;
    }
    free(text);
    s->turn++;
    return n_gen;
}

/* One user message: prefill what the cache lacks, then reply. Returns 0 to go on, 1 on a fatal error. */
static int user_turn(chat_state *s, const char *line, size_t len) {
    if (!push_msg(s, "user", line, len)) return cli_error("out of memory");
    char *text = pending_text(s);
    if (!text) { pop_msg(s); return 0; }
    int n = 0;
    int32_t *toks = tokenize_turn(s, text, &n);
    if (s->o->show_prompt) fprintf(stderr, "[prefill %d tokens]\n%s\n[end of prefill]\n", n, text);
    free(text);
    if (!toks) { pop_msg(s); return cli_error("out of memory tokenizing the turn"); }
    if (n == 0) { free(toks); pop_msg(s); return 0; }
    if ((long)hkv_n_past(s->c, 0) + n >= s->n_ctx) {
        cli_error("this turn needs positions up to %ld, past the context length %d (positions keep growing even "
                  "when the cache evicts): /reset to start over, or use a larger -c", (long)hkv_n_past(s->c, 0) + n,
                  s->n_ctx);
        free(toks);
        pop_msg(s);
        return 0;
    }
    for (int i = 0; i < n; i++) hkv_sampler_accept(s->smp, toks[i]);
    hkv_status st = hkv_decode(s->c, 0, toks, n);
    free(toks);
    if (st) {
        cli_error("%s; the conversation is reset", hkv_last_error(s->c));
        reset_conversation(s);
        return 0;
    }
    s->prefilled_total += n;
    int gen = reply(s);
    if (gen >= 0 && s->o->kv_stats) print_turn_stats(s, n, gen);
    return 0;
}

/* Reads a line (without its newline) into *buf. Returns its length, -1 at end of input, -2 when Ctrl-C
 * interrupted the read. */
static long read_line(char **buf, size_t *cap) {
    errno = 0;
    ssize_t n = getline(buf, cap, stdin);
    if (n < 0) {
        int intr = g_interrupted || errno == EINTR;
        clearerr(stdin);
        return intr ? -2 : -1;
    }
    while (n > 0 && ((*buf)[n - 1] == '\n' || (*buf)[n - 1] == '\r')) (*buf)[--n] = 0;
    return (long)n;
}

static int chat_loop(chat_state *s) {
    int tty = isatty(STDIN_FILENO);
    char *line = NULL;
    size_t cap = 0;
    int pending_exit = 0;
    for (;;) {
        if (tty) { fputs("> ", stdout); fflush(stdout); }
        long n = read_line(&line, &cap);
        if (n == -1) break;                       /* Ctrl-D / end of input */
        if (n == -2) {
            g_interrupted = 0;
            if (pending_exit) break;
            pending_exit = 1;
            fprintf(stderr, "\n(Ctrl-C again to exit, or Ctrl-D)\n");
            continue;
        }
        pending_exit = 0;
        if (n == 0) continue;
        if (!strcmp(line, "/exit") || !strcmp(line, "/quit")) break;
        if (!strcmp(line, "/reset")) { reset_conversation(s); fprintf(stderr, "(conversation reset)\n"); continue; }
        if (line[0] == '/' && !strchr(line, ' ')) {
            fprintf(stderr, "(unknown command %s: /reset, /exit)\n", line);
            continue;
        }
        if (user_turn(s, line, (size_t)n)) { free(line); return 1; }
    }
    if (tty) fputc('\n', stdout);
    free(line);
    return 0;
}

static int chat_with_model(hkv_model *m, const chat_opts *o, const sigset_t *main_mask) {
    chat_state s = {.m = m, .o = o};
    hkv_model_get_info(m, &s.mi);
    char err[512];
    if (hkv_chat_template_check(m, o->tmpl, NULL, 0, &s.family, err, sizeof err))
        return cli_error("%s%s", err, o->tmpl ? "" : " (use --chat-template NAME)");
    s.add_bos = o->bos >= 0 ? o->bos : s.mi.add_bos;
    hkv_context_params cp = hkv_context_default_params();
    cp.n_ctx = o->n_ctx;
    cp.n_threads = o->n_threads;
    cp.kv = o->kv;
    cp.ref_len = 0;   /* a percentage budget is of the context length: a conversation has no fixed length */
    s.n_ctx = o->n_ctx ? o->n_ctx : s.mi.n_ctx_default;
    if (hkv_context_new(m, &cp, &s.c, err, sizeof err)) return cli_error("%s", err);
    if (hkv_sampler_new(&o->sp, s.mi.n_vocab, &s.smp, err, sizeof err)) {
        hkv_context_free(s.c);
        return cli_error("%s", err);
    }
    int rc = 0;
    if (o->system && !push_msg(&s, "system", o->system, strlen(o->system))) rc = cli_error("out of memory");
    if (!rc) {
        hkv_budget b = hkv_context_budget(s.c);
        fprintf(stderr, "chat: template %s, BOS %s, KV policy %s (budget %d per head), context %d; /reset, /exit, "
                "Ctrl-C stops a reply, Ctrl-D exits\n", s.family, s.add_bos ? "yes" : "no", o->kv.policy, b.total,
                s.n_ctx);
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_sigint;   /* no SA_RESTART: Ctrl-C must interrupt a blocking read of stdin */
        sigemptyset(&sa.sa_mask);
        struct sigaction old;
        sigaction(SIGINT, &sa, &old);
        pthread_sigmask(SIG_SETMASK, main_mask, NULL);
        rc = chat_loop(&s);
        sigaction(SIGINT, &old, NULL);
    }
    while (s.n_msgs) pop_msg(&s);
    free(s.msgs);
    hkv_sampler_free(s.smp);
    hkv_context_free(s.c);
    return rc;
}

int cmd_chat(int argc, char **argv) {
    chat_opts o;
    int r = parse_chat(argc, argv, &o);
    if (r) return r == 2 ? 0 : 1;
    if (o.tmpl) {   /* a bad name is reported before the model is loaded */
        char err[256];
        hkv_status st = hkv_chat_template_check(NULL, o.tmpl, NULL, 0, NULL, err, sizeof err);
        if (st) return cli_error("%s", err);
    }
    /* Worker threads (started while loading and creating the context) inherit a mask without SIGINT, so
     * Ctrl-C always reaches the main thread and interrupts its read of stdin. */
    sigset_t intr, old;
    sigemptyset(&intr);
    sigaddset(&intr, SIGINT);
    pthread_sigmask(SIG_BLOCK, &intr, &old);
    hkv_model *m = cli_load_model(o.model, o.n_threads);
    if (!m) { pthread_sigmask(SIG_SETMASK, &old, NULL); return 1; }
    cli_warn_long_ctx(m, o.n_ctx, &o.kv);
    int rc = chat_with_model(m, &o, &old);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    hkv_model_free(m);
    return rc;
}
