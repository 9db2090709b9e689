/* Splitting imageio's work over a caller's threads (cs_img_par, see
 * imageio.h): how many parts, and running them. */
#include "imageio/imageio_internal.h"

int cs_img_par_ways(const cs_img_par *par, size_t units, size_t unit_min) {
    int ways = par && par->run ? par->ways : 1;
    if (ways > CS_IMG_PAR_MAX) ways = CS_IMG_PAR_MAX;
    if (unit_min > 0 && units / unit_min < (size_t)ways) ways = (int)(units / unit_min);
    return ways < 1 ? 1 : ways;
}

void cs_img_par_run(const cs_img_par *par, int n, void (*fn)(void *arg, int i), void *arg) {
    if (n > 1 && par && par->run) {
        par->run(par->ctx, n, fn, arg);
        return;
    }
    for (int i = 0; i < n; i++) fn(arg, i);
}
