/* Directory listings shared by the CLI and eval: names in a stable order,
 * so that reports and metrics do not depend on readdir's order. */
#ifndef CS_UTIL_FILES_H
#define CS_UTIL_FILES_H

#include "camserve/common.h"

/* Sorted names (not paths) of dir's entries accepted by keep (NULL: all
 * but dot files); *names is owned by the caller: cs_free_names. */
cs_status cs_list_dir(const char *dir, int (*keep)(const char *), char ***names, int *n,
                      cs_error *err);
void cs_free_names(char **names, int n);

#endif
