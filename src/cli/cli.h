/* Subcommands of the camserve binary.  Each returns the process exit code
 * (0 ok, 1 runtime failure, 2 usage error) and prints one clear line on
 * stderr on failure. */
#ifndef CS_CLI_H
#define CS_CLI_H

#include "camserve/common.h"

#include <stdbool.h>
#include <stdint.h>

int cs_cli_inspect(int argc, char **argv);
int cs_cli_classify(int argc, char **argv);
int cs_cli_explain(int argc, char **argv);
int cs_cli_bench(int argc, char **argv);
int cs_cli_bench_gemm(int argc, char **argv);
int cs_cli_preprocess(int argc, char **argv);
int cs_cli_eval(int argc, char **argv);
int cs_cli_pull(int argc, char **argv);
int cs_cli_serve(int argc, char **argv);
int cs_cli_cache(int argc, char **argv);

/* ---- shared helpers (src/cli/util.c) ---- */

/* Minimal long-option parser: "--name value" and "--flag".  Options are
 * declared in a table; unknown options are a usage error. */
typedef struct cli_opt {
    const char *name;
    bool takes_value;
    const char *value; /* last value given (or "1" for flags), NULL if absent */
    int count;
    const char **values; /* every value, for repeatable options (malloc'd) */
} cli_opt;

/* Returns 0 on success, 2 (after printing a message) on a usage error. */
int cli_parse(const char *cmd, int argc, char **argv, cli_opt *opts, int nopts);
void cli_free(cli_opt *opts, int nopts);
cli_opt *cli_get(cli_opt *opts, int nopts, const char *name);
/* Parses a positive integer option value; returns def when absent. */
int cli_int(const char *cmd, cli_opt *o, int def, int *ok);

int cli_fail(const char *cmd, const cs_error *err);
void cli_set_threads(int threads);

/* Labels: one per line; NULL-safe lookup. */
typedef struct cli_labels {
    int n;
    char **names;
    char *buf;
} cli_labels;
cs_status cli_labels_load(const char *path, cli_labels *out, cs_error *err);
/* Labels from text, one per line. */
cs_status cli_labels_from_text(const char *text, cli_labels *out, cs_error *err);
const char *cli_label(const cli_labels *l, int64_t i);
void cli_labels_free(cli_labels *l);

#endif
