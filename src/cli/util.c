#include "cli/cli.h"
#include "camserve/imageio.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cli_parse(const char *cmd, int argc, char **argv, cli_opt *opts, int nopts) {
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "camserve %s: unexpected argument '%s'\n", cmd, a);
            cli_free(opts, nopts);
            return 2;
        }
        cli_opt *o = cli_get(opts, nopts, a + 2);
        if (!o) {
            fprintf(stderr, "camserve %s: unknown option '%s' (see camserve help)\n", cmd, a);
            cli_free(opts, nopts);
            return 2;
        }
        const char *v = "1";
        if (o->takes_value) {
            if (i + 1 >= argc) {
                fprintf(stderr, "camserve %s: option '%s' needs a value\n", cmd, a);
                cli_free(opts, nopts);
                return 2;
            }
            v = argv[++i];
        }
        const char **nv = realloc(o->values, (size_t)(o->count + 1) * sizeof(char *));
        if (!nv) {
            fprintf(stderr, "camserve %s: out of memory\n", cmd);
            cli_free(opts, nopts);
            return 2;
        }
        o->values = nv;
        o->values[o->count++] = v;
        o->value = v;
    }
    return 0;
}

void cli_free(cli_opt *opts, int nopts) {
    for (int i = 0; i < nopts; i++) {
        free(opts[i].values);
        opts[i].values = NULL;
    }
}

cli_opt *cli_get(cli_opt *opts, int nopts, const char *name) {
    for (int i = 0; i < nopts; i++)
        if (strcmp(opts[i].name, name) == 0) return &opts[i];
    return NULL;
}

int cli_int(const char *cmd, cli_opt *o, int def, int *ok) {
    if (!o || !o->value) return def;
    char *end;
    long v = strtol(o->value, &end, 10);
    if (*end || v < 1 || v > 1000000) {
        fprintf(stderr, "camserve %s: --%s must be a positive integer, got '%s'\n", cmd, o->name,
                o->value);
        *ok = 0;
        return def;
    }
    return (int)v;
}

int cli_fail(const char *cmd, const cs_error *err) {
    fprintf(stderr, "camserve %s: %s\n", cmd, err->msg[0] ? err->msg : cs_status_str(err->code));
    return 1;
}

void cli_set_threads(int threads) {
    if (threads > 0) omp_set_num_threads(threads);
}

/* Splits out->buf (owned) into lines, in place, as the server does
 * (cs_img_labels_split: a label that is not UTF-8 is refused). */
static cs_status split_labels(cli_labels *out, cs_error *err) {
    cs_status st = cs_img_labels_split(out->buf, &out->names, &out->n, err);
    if (st != CS_OK) {
        free(out->buf);
        out->buf = NULL;
    }
    return st;
}

cs_status cli_labels_from_text(const char *text, cli_labels *out, cs_error *err) {
    memset(out, 0, sizeof *out);
    if (!(out->buf = strdup(text))) return cs_errorf(err, CS_ENOMEM, "out of memory");
    return split_labels(out, err);
}

cs_status cli_labels_load(const char *path, cli_labels *out, cs_error *err) {
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) return cs_errorf(err, CS_EIO, "cannot open labels file %s", path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    rewind(f);
    if (len < 0 || len > (64L << 20)) {
        fclose(f);
        return cs_errorf(err, CS_EIO, "cannot read labels file %s", path);
    }
    out->buf = malloc((size_t)len + 1);
    if (!out->buf) {
        fclose(f);
        return cs_errorf(err, CS_ENOMEM, "out of memory");
    }
    size_t got = fread(out->buf, 1, (size_t)len, f);
    fclose(f);
    out->buf[got] = '\0';
    cs_status st = split_labels(out, err);
    if (st != CS_OK) cs_error_prefix(err, "%s", path);
    return st;
}

const char *cli_label(const cli_labels *l, int64_t i) {
    return (l && i >= 0 && i < l->n) ? l->names[i] : NULL;
}

void cli_labels_free(cli_labels *l) {
    free(l->names);
    free(l->buf);
    memset(l, 0, sizeof *l);
}
