/* camserve: one binary, several subcommands.  Each lives in its own file and
 * is a thin layer: parse options, call the library, format the answer. */
#include "camserve/cuda.h"
#include "camserve/engine.h"
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>

typedef struct command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *usage;
} command;

static const command COMMANDS[] = {
    {"inspect", cs_cli_inspect, "inspect [--model M] [--json] [--device cpu|cuda[:N]|auto] [--precision fp32|fp16|bf16]"},
    {"classify", cs_cli_classify,
     "classify [--model M] (--image FILE|DIR... | --tensor X.npy) [--labels L] [--topk 5] [--json] "
     "[--save-logits OUT.npy] [--threads T] [--device cpu|cuda[:N]|auto] [--precision fp32|fp16|bf16]"},
    {"explain", cs_cli_explain,
     "explain [--model M] (--image FILE|DIR... | --tensor X.npy) [--method gradcam] [--layer auto|NAME[,NAME]] "
     "[--class top|K|topk:K|LABEL] [--out DIR] [--json] [--save-cam CAM.npy] [--cam-size layer|input] "
     "[--aug-smooth] [--eigen-smooth] [--colormap jet|turbo|viridis|inferno] [--alpha A] [--threads T] [--device cpu|cuda[:N]|auto] [--precision fp32|fp16|bf16]"},
    {"preprocess", cs_cli_preprocess, "preprocess [--model M] --image I --save-tensor X.npy"},
    {"bench", cs_cli_bench,
     "bench [--model M] (--image I | --tensor X.npy) [--batch B] [--iters N] [--warmup W] "
     "[--threads T] [--method M [--layer L]] [--device cpu|cuda[:N]|auto] [--precision fp32|fp16|bf16] --json"},
    {"bench-gemm", cs_cli_bench_gemm, "bench-gemm [--size N (2048)] [--json]"},
    {"eval", cs_cli_eval,
     "eval [--model M] --data DIR [--method gradcam[,gradcam++,...]|none] [--layer auto|NAME] "
     "[--tolerance PX] [--limit N] [--steps 10] [--threads T] [--json] (layout: docs/models.md)"},
    {"pull", cs_cli_pull,
     "pull NAME [--dir DIR] [--force] | pull NAME --url URL --sha256 HEX [--dir DIR] | pull --list"},
    {"cache", cs_cli_cache, "cache stats|clear --cache-dir DIR [--verify] [--json]"},
    {"serve", cs_cli_serve, "serve [--model PATH[:NAME]]... [--host 127.0.0.1] [--port 8080] [--workers N] [--threads T] [--max-batch B] [--batch-window-ms W] [--queue Q] [--timeout-ms MS] [--cache-mem-mb MB] [--cache-dir DIR] [--max-upload-mb 25] [--max-inflight-mb 64] [--device cpu|cuda[:N]|auto] [--precision fp32|fp16|bf16] [--gpu-decode on|off] [--encode-threads N] [--labels L.txt]... (see docs/api.md)"},
};
#define NCOMMANDS (int)(sizeof COMMANDS / sizeof COMMANDS[0])

static void usage(FILE *f) {
    fprintf(f, "camserve %s: classify images with ONNX CNNs and explain them with Grad-CAM\n\nusage:\n",
            CS_VERSION);
    for (int i = 0; i < NCOMMANDS; i++) fprintf(f, "  camserve %s\n", COMMANDS[i].usage);
    fprintf(f, "  camserve help | version\n");
}

static const command *find(const char *name) {
    for (int i = 0; i < NCOMMANDS; i++)
        if (!strcmp(name, COMMANDS[i].name)) return &COMMANDS[i];
    return NULL;
}

static int command_help(const command *c) {
    printf("usage: camserve %s\n\nOptions are described in README.md (\"Using it\") and, for serve, docs/api.md.\n",
           c->usage);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        const command *c = argc > 2 ? find(argv[2]) : NULL;
        if (c) return command_help(c);
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        char v[128], c[160];
        cs_cuda_versions(v, sizeof v);
        cs_cpu_describe(c, sizeof c);
        printf("camserve %s (%s)\ncpu: %s\n", CS_VERSION, v, c);
        return 0;
    }
    const command *c = find(cmd);
    if (c) {
        /* `camserve explain --help` anywhere on the line: that command's usage,
         * not an "unknown option" error */
        for (int i = 2; i < argc; i++)
            if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return command_help(c);
        return c->fn(argc - 2, argv + 2);
    }
    fprintf(stderr, "camserve: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
