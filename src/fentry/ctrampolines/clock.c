/* The clock's one decision: TSC or clock_gettime (see clock.h). */
#include <stdio.h>
#include <string.h>
#include "clock.h"

int use_tsc = 0;

void
clock_init(void)
{
#if defined(__x86_64__)
    FILE *f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "r");
    char name[32] = {0};
    if (f != NULL) {
        if (fgets(name, sizeof name, f) != NULL)
            use_tsc = strcmp(name, "tsc\n") == 0;
        fclose(f);
    }
#endif
}
