/* camserve pull: fetch a well-known ONNX classifier (or any URL with a
 * pinned SHA-256) into the model directory, verified. */
#include "camserve/models.h"
#include "cli/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { O_DIR, O_URL, O_SHA, O_FORCE, O_LIST, O_N };

static void list_catalog(void) {
    const cs_models_entry *c;
    int n = cs_models_catalog(&c);
    for (int i = 0; i < n; i++) printf("%-20s %s\n", c[i].name, c[i].description);
}

int cs_cli_pull(int argc, char **argv) {
    cli_opt opts[O_N] = {
        [O_DIR] = {"dir", true},      [O_URL] = {"url", true}, [O_SHA] = {"sha256", true},
        [O_FORCE] = {"force", false}, [O_LIST] = {"list", false},
    };
    const char *name = NULL;
    if (argc > 0 && strncmp(argv[0], "--", 2) != 0) {
        name = argv[0];
        argc--, argv++;
    }
    int rc = cli_parse("pull", argc, argv, opts, O_N);
    if (rc) return rc;
    if (opts[O_LIST].value) {
        list_catalog();
        cli_free(opts, O_N);
        return 0;
    }
    if (!name) {
        fprintf(stderr, "camserve pull: which model? one of:\n");
        const cs_models_entry *c;
        int n = cs_models_catalog(&c);
        for (int i = 0; i < n; i++) fprintf(stderr, "  %s\n", c[i].name);
        cli_free(opts, O_N);
        return 2;
    }
    const cs_models_entry *known = cs_models_find(name);
    cs_models_entry custom = {0};
    if (opts[O_URL].value || opts[O_SHA].value) {
        if (!opts[O_URL].value || !opts[O_SHA].value) {
            fprintf(stderr, "camserve pull: --url and --sha256 go together (every download is verified)\n");
            cli_free(opts, O_N);
            return 2;
        }
        if (known) custom = *known;
        custom.name = name;
        custom.url = opts[O_URL].value;
        custom.file = NULL;
        custom.sha256 = opts[O_SHA].value;
        custom.size = 0;
        if (!known) custom.description = "custom";
        known = &custom;
    } else if (!known) {
        fprintf(stderr, "camserve pull: unknown model '%s'; known: ", name);
        const cs_models_entry *c;
        int n = cs_models_catalog(&c);
        for (int i = 0; i < n; i++) fprintf(stderr, "%s%s", i ? ", " : "", c[i].name);
        fprintf(stderr, " (or give --url URL --sha256 HEX)\n");
        cli_free(opts, O_N);
        return 2;
    }
    cs_models_pull_options po = cs_models_pull_default_options();
    po.dir = opts[O_DIR].value;
    po.force = opts[O_FORCE].value != NULL;
    po.progress = isatty(2);
    /* an explicit --url is used as given, whatever CAMSERVE_PULL_BASE_URL says */
    if (opts[O_URL].value) po.base_url = "";
    cs_error err = {0};
    char *path = NULL;
    rc = 0;
    if (cs_models_pull(known, &po, &path, &err) != CS_OK) {
        rc = cli_fail("pull", &err);
    } else {
        fprintf(stderr, "camserve pull: %s verified (sha256 %s)\n", known->name, known->sha256);
        printf("%s\n", path);
    }
    free(path);
    cli_free(opts, O_N);
    return rc;
}
