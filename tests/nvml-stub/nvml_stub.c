/*
 * A stand-in for NVIDIA's libnvidia-ml.so.1, for tal's tests and benchmarks
 * on machines without an NVIDIA driver. It implements the NVML calls tal
 * makes (and the costly ones it must not make on its polling path), with
 * NVML's signatures and return codes, and it models what matters about the
 * real driver:
 *
 * - **Cost.** Each entry point burns the CPU time the real driver was
 *   measured to take on an NVIDIA H200 (driver 580), per C call, by spinning
 *   on the calling thread's CPU clock (the real calls spin too: wall time
 *   equals CPU time there). The defaults below are that table; `cost` lines
 *   override them.
 * - **Samples.** The driver takes a utilisation sample every 167 ms (the
 *   H200's period) with its own timestamp (CLOCK_REALTIME, microseconds) and
 *   keeps the newest 71 (about 12 s); nvmlDeviceGetSamples returns those
 *   newer than the caller's last-seen timestamp, and
 *   nvmlDeviceGetUtilizationRates returns the newest sample's value.
 *
 * It is driven by a script file named in $NVML_STUB_CONFIG (read at
 * nvmlInit):
 *
 *   init CODE                       nvmlInit_v2 returns CODE (9: driver not loaded, 4: no permission)
 *   device UUID BUSID MEM_TOTAL NAME   one device, in NVML's index order
 *   util DEV V1,V2,...              GPU utilisation of the driver's samples, one value per sample
 *                                   (the last one repeats)
 *   pattern DEV ON_MS OFF_MS [HIGH [LOW]]
 *                                   a duty cycle from nvmlInit: HIGH % while on, LOW % while off
 *                                   (100 and 0); each sample is the busy share of its own period
 *   period MS                       the driver's sample period (default 167)
 *   keep N                          samples the driver keeps (default 71, at most 4096)
 *   nosamples DEV                   nvmlDeviceGetSamples says NOT_SUPPORTED for DEV
 *   fail DEV N                      after N polls every call on DEV returns GPU_IS_LOST
 *   outage DEV FROM_MS TO_MS        every call on DEV returns GPU_IS_LOST in that span after nvmlInit
 *   procs FILE                      compute processes, re-read at each call: lines "DEV PID BYTES"
 *   mig DEV N                       DEV is in MIG mode with N instances (UUIDs MIG-<DEV>-<J>;
 *                                   they answer memory queries, not utilisation, as on real MIG)
 *   cost CALL US                    CALL burns US microseconds of CPU per C call ("all": every call)
 *   dump FILE                       at nvmlShutdown, write what the driver did to FILE: lines
 *                                   "sample DEV TS_US VALUE", "call NAME COUNT",
 *                                   "energy DEV FROM_US TO_US MILLIJOULES" (exact, from the model)
 *
 * A "poll" (for `fail`) is one nvmlDeviceGetUtilizationRates, or one
 * nvmlDeviceGetSamples count query (NULL buffer). Memory-utilisation
 * samples are half the GPU value. Memory used is util% of the total plus
 * the memory of the device's processes in the `procs` file; power
 * 100 W + util W; temperature 30 + util/2 C; SM clock 1000 + 10 * util MHz;
 * util being the newest sample's value (0 before the first sample).
 *
 * Built with -DNO_SAMPLES it lacks the nvmlDeviceGetSamples symbol (an
 * older driver), to test the fallback.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int nvmlReturn_t;
enum {
    OK = 0, UNINIT = 1, INVALID_ARG = 2, NOT_SUPPORTED = 3, NOT_FOUND = 6,
    INSUFFICIENT_SIZE = 7, GPU_IS_LOST = 15, UNKNOWN = 999
};

#define MAX_DEV 16
#define MAX_UTIL 256
#define MAX_HISTORY 16384

typedef struct { unsigned long long ts; unsigned long long value; } sample_t;

typedef struct {
    char uuid[96];
    char busid[32];
    char name[96];
    unsigned long long mem_total;
    unsigned int util[MAX_UTIL];
    int nutil;
    int pattern_on_ms, pattern_off_ms; /* 0: no pattern */
    unsigned int pattern_high, pattern_low;
    int polls;
    int nosamples;
    int fail_after; /* -1: never */
    int outage_from_ms, outage_to_ms; /* equal: none */
    /* Every sample the driver took: its visible buffer is the newest `keep`. */
    sample_t history[MAX_HISTORY];
    int nhistory;
    int mig_count;   /* physical device: MIG instances (0: MIG off) */
    int mig_parent;  /* MIG instance: parent index; -1 for a physical device */
} device_t;

static device_t devs[MAX_DEV];
static int ndev;
static device_t migs[MAX_DEV];
static int nmig;
static int init_code;
static int initialised;
static char procs_file[512];
static char dump_file[512];
static unsigned long long t0_us;     /* CLOCK_REALTIME at nvmlInit */
static unsigned long long period_us = 167000;
static int keep = 71;

/* ---- cost model ---------------------------------------------------------- */

enum {
    C_UTIL, C_SAMPLES, C_MEM, C_MEM_V2, C_POWER, C_ENERGY, C_TEMP, C_CLOCK,
    C_PROCS, C_FIELDS, C_PSTATE, C_OTHER, NCALLS
};
static const char *call_names[NCALLS] = {
    "nvmlDeviceGetUtilizationRates", "nvmlDeviceGetSamples", "nvmlDeviceGetMemoryInfo",
    "nvmlDeviceGetMemoryInfo_v2", "nvmlDeviceGetPowerUsage",
    "nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetTemperature",
    "nvmlDeviceGetClockInfo", "nvmlDeviceGetComputeRunningProcesses_v3",
    "nvmlDeviceGetFieldValues", "nvmlDeviceGetPerformanceState", "other",
};
/* CPU µs per C call on an H200, driver 580 (NVML-H200 table; pynvml's two-call
 * wrappers of GetSamples and GetComputeRunningProcesses halved). Calls made
 * only at start-up (handles, UUID, name, PCI info, MIG) were not measured
 * and cost nothing here. */
static const double h200_cost_us[NCALLS] = {
    2.1, 1400.0, 12.2, 9.2, 1.6, 4162.0, 2.4, 2.3, 5.1, 4129.0, 2.0, 0.0,
};
static double cost_us[NCALLS];
static unsigned long long calls[NCALLS];
/* What one read of the thread's CPU clock costs (a system call: ~0.5 µs on
 * a VM), measured at nvmlInit. */
static unsigned long long clock_read_ns;

static unsigned long long thread_cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (unsigned long long)ts.tv_sec * 1000000000ULL + (unsigned long long)ts.tv_nsec;
}

static void calibrate(void) {
    unsigned long long a = thread_cpu_ns();
    for (int i = 0; i < 1000; i++) thread_cpu_ns();
    clock_read_ns = (thread_cpu_ns() - a) / 1001;
}

/* Spin on the thread's CPU clock, as the real driver's calls spin. The
 * clock reads are part of the spin: the first one counts towards the cost
 * and the last overshoots by half a read on average, so the call costs
 * what the table says, not a read or two more. */
static void burn(int call) {
    calls[call]++;
    double us = cost_us[call];
    if (us <= 0) return;
    unsigned long long cost = (unsigned long long)(us * 1000.0);
    unsigned long long until = thread_cpu_ns() + (cost > clock_read_ns ? cost - clock_read_ns : 0);
    while (thread_cpu_ns() < until) {
    }
}

static unsigned long long now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000ULL;
}

/* ---- the device model ---------------------------------------------------- */

/* Busy share (%) of [from, to) µs after t0 under d's duty cycle. */
static double pattern_share(const device_t *d, unsigned long long from, unsigned long long to) {
    unsigned long long on = (unsigned long long)d->pattern_on_ms * 1000ULL;
    unsigned long long cyc = on + (unsigned long long)d->pattern_off_ms * 1000ULL;
    unsigned long long busy = 0;
    for (unsigned long long t = from; t < to;) {
        unsigned long long in = t % cyc, next = t - in + (in < on ? on : cyc);
        if (next > to) next = to;
        if (in < on) busy += next - t;
        t = next;
    }
    double share = to > from ? (double)busy / (double)(to - from) : 0.0;
    return share * d->pattern_high + (1.0 - share) * d->pattern_low;
}

/* The value of sample k (1-based) of d, taken at t0 + k * period. */
static unsigned int sample_value(const device_t *d, int k) {
    if (d->pattern_on_ms > 0) {
        unsigned long long to = (unsigned long long)k * period_us;
        return (unsigned int)(pattern_share(d, to - period_us, to) + 0.5);
    }
    if (d->nutil == 0) return 0;
    int i = k - 1 < d->nutil ? k - 1 : d->nutil - 1;
    return d->util[i];
}

/* Takes the samples due by now. */
static void advance(device_t *d) {
    if (d->mig_parent >= 0) return;
    unsigned long long due = (now_us() - t0_us) / period_us;
    while ((unsigned long long)d->nhistory < due && d->nhistory < MAX_HISTORY) {
        int k = d->nhistory + 1;
        d->history[d->nhistory].ts = t0_us + (unsigned long long)k * period_us;
        d->history[d->nhistory].value = sample_value(d, k);
        d->nhistory++;
    }
}

static unsigned int cur_util(device_t *d) {
    advance(d);
    return d->nhistory > 0 ? (unsigned int)d->history[d->nhistory - 1].value : 0;
}

static int lost(device_t *d) {
    if (d->fail_after >= 0 && d->polls > d->fail_after) return 1;
    if (d->outage_to_ms > d->outage_from_ms) {
        unsigned long long ms = (now_us() - t0_us) / 1000ULL;
        if (ms >= (unsigned long long)d->outage_from_ms && ms < (unsigned long long)d->outage_to_ms)
            return 1;
    }
    return 0;
}

static device_t *new_device(device_t *d) {
    memset(d, 0, sizeof *d);
    d->fail_after = -1;
    d->mig_parent = -1;
    d->pattern_high = 100;
    return d;
}

static int call_index(const char *name) {
    for (int c = 0; c < NCALLS; c++)
        if (!strcmp(name, call_names[c])) return c;
    return -1;
}

static void load(void) {
    ndev = 0; nmig = 0; init_code = 0; procs_file[0] = 0; dump_file[0] = 0;
    period_us = 167000; keep = 71;
    memcpy(cost_us, h200_cost_us, sizeof cost_us);
    memset(calls, 0, sizeof calls);
    t0_us = now_us();
    calibrate();
    const char *path = getenv("NVML_STUB_CONFIG");
    if (!path) return;
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        char kw[32];
        if (sscanf(line, "%31s", kw) != 1) continue;
        int i = -1, n = 0, m = 0;
        if (!strcmp(kw, "init")) {
            sscanf(line, "%*s %d", &init_code);
        } else if (!strcmp(kw, "device") && ndev < MAX_DEV) {
            device_t *d = new_device(&devs[ndev++]);
            sscanf(line, "%*s %95s %31s %llu %95[^\n]", d->uuid, d->busid, &d->mem_total, d->name);
        } else if (!strcmp(kw, "util")) {
            char list[4000];
            if (sscanf(line, "%*s %d %3999s", &i, list) == 2 && i >= 0 && i < ndev) {
                device_t *d = &devs[i];
                for (char *t = strtok(list, ","); t && d->nutil < MAX_UTIL; t = strtok(NULL, ","))
                    d->util[d->nutil++] = (unsigned int)atoi(t);
            }
        } else if (!strcmp(kw, "pattern")) {
            unsigned int hi = 100, lo = 0;
            if (sscanf(line, "%*s %d %d %d %u %u", &i, &n, &m, &hi, &lo) >= 3 && i >= 0 && i < ndev
                && n > 0 && m >= 0) {
                devs[i].pattern_on_ms = n;
                devs[i].pattern_off_ms = m;
                devs[i].pattern_high = hi;
                devs[i].pattern_low = lo;
            }
        } else if (!strcmp(kw, "period")) {
            if (sscanf(line, "%*s %d", &n) == 1 && n > 0) period_us = (unsigned long long)n * 1000ULL;
        } else if (!strcmp(kw, "keep")) {
            if (sscanf(line, "%*s %d", &n) == 1 && n > 0) keep = n < MAX_HISTORY ? n : MAX_HISTORY;
        } else if (!strcmp(kw, "nosamples")) {
            if (sscanf(line, "%*s %d", &i) == 1 && i >= 0 && i < ndev) devs[i].nosamples = 1;
        } else if (!strcmp(kw, "fail")) {
            if (sscanf(line, "%*s %d %d", &i, &n) == 2 && i >= 0 && i < ndev) devs[i].fail_after = n;
        } else if (!strcmp(kw, "outage")) {
            if (sscanf(line, "%*s %d %d %d", &i, &n, &m) == 3 && i >= 0 && i < ndev) {
                devs[i].outage_from_ms = n;
                devs[i].outage_to_ms = m;
            }
        } else if (!strcmp(kw, "mig")) {
            if (sscanf(line, "%*s %d %d", &i, &n) == 2 && i >= 0 && i < ndev) {
                devs[i].mig_count = n;
                for (int j = 0; j < n && nmig < MAX_DEV; j++) {
                    device_t *g = new_device(&migs[nmig++]);
                    g->mig_parent = i;
                    g->nosamples = 1;
                    g->mem_total = devs[i].mem_total / (unsigned long long)n;
                    snprintf(g->uuid, sizeof g->uuid, "MIG-%d-%d", i, j);
                    snprintf(g->busid, sizeof g->busid, "%s", devs[i].busid);
                    snprintf(g->name, sizeof g->name, "%s MIG %d", devs[i].name, j);
                }
            }
        } else if (!strcmp(kw, "procs")) {
            sscanf(line, "%*s %511s", procs_file);
        } else if (!strcmp(kw, "dump")) {
            sscanf(line, "%*s %511s", dump_file);
        } else if (!strcmp(kw, "cost")) {
            char name[128];
            double us;
            if (sscanf(line, "%*s %127s %lf", name, &us) == 2) {
                if (!strcmp(name, "all")) {
                    for (int c = 0; c < NCALLS; c++) cost_us[c] = us;
                } else if ((n = call_index(name)) >= 0) {
                    cost_us[n] = us;
                }
            }
        }
    }
    fclose(f);
}

/* Energy (mJ) of the power model over [from, to) µs: 100 W + util W, util
 * being the newest sample's value, so piecewise constant between samples. */
static double model_energy_mj(const device_t *d, unsigned long long from, unsigned long long to) {
    double mj = 0;
    for (int k = 0; k <= d->nhistory; k++) {
        unsigned long long a = k == 0 ? t0_us : d->history[k - 1].ts;
        unsigned long long b = k < d->nhistory ? d->history[k].ts : to;
        unsigned int util = k == 0 ? 0 : (unsigned int)d->history[k - 1].value;
        if (a < from) a = from;
        if (b > to) b = to;
        if (b > a) mj += (100.0 + util) * (double)(b - a) / 1000.0;
    }
    return mj;
}

static void dump(void) {
    if (!dump_file[0]) return;
    FILE *f = fopen(dump_file, "w");
    if (!f) return;
    unsigned long long end = now_us();
    for (int i = 0; i < ndev; i++) {
        advance(&devs[i]);
        for (int k = 0; k < devs[i].nhistory; k++)
            fprintf(f, "sample %d %llu %llu\n", i, devs[i].history[k].ts, devs[i].history[k].value);
        fprintf(f, "energy %d %llu %llu %.3f\n", i, t0_us, end, model_energy_mj(&devs[i], t0_us, end));
    }
    for (int c = 0; c < NCALLS; c++) fprintf(f, "call %s %llu\n", call_names[c], calls[c]);
    fclose(f);
}

static device_t *dev(void *h) {
    for (int i = 0; i < ndev; i++) if (h == &devs[i]) return &devs[i];
    for (int i = 0; i < nmig; i++) if (h == &migs[i]) return &migs[i];
    return NULL;
}

#define DEV_OR_FAIL(h, call) \
    burn(call); \
    device_t *d = dev(h); \
    if (!initialised) return UNINIT; \
    if (!d) return INVALID_ARG; \
    if (lost(d)) return GPU_IS_LOST;

nvmlReturn_t nvmlInit_v2(void) {
    load();
    if (init_code) return init_code;
    initialised = 1;
    return OK;
}
nvmlReturn_t nvmlInitWithFlags(unsigned int flags) { (void)flags; return nvmlInit_v2(); }
nvmlReturn_t nvmlShutdown(void) {
    if (initialised) dump();
    initialised = 0;
    return OK;
}

const char *nvmlErrorString(nvmlReturn_t r) {
    switch (r) {
    case OK: return "Success";
    case UNINIT: return "Uninitialized";
    case NOT_SUPPORTED: return "Not Supported";
    case 4: return "Insufficient Permissions";
    case NOT_FOUND: return "Not Found";
    case INSUFFICIENT_SIZE: return "Insufficient Size";
    case 9: return "Driver Not Loaded";
    case GPU_IS_LOST: return "GPU is lost";
    default: return "Unknown Error";
    }
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *v, unsigned int n) {
    snprintf(v, n, "580.159.04");
    return OK;
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *n) {
    if (!initialised) return UNINIT;
    *n = (unsigned int)ndev;
    return OK;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int i, void **h) {
    if (!initialised) return UNINIT;
    if (i >= (unsigned int)ndev) return INVALID_ARG;
    *h = &devs[i];
    return OK;
}

nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, void **h) {
    if (!initialised) return UNINIT;
    for (int i = 0; i < ndev; i++)
        if (!strcmp(devs[i].uuid, uuid)) { *h = &devs[i]; return OK; }
    for (int i = 0; i < nmig; i++)
        if (!strcmp(migs[i].uuid, uuid)) { *h = &migs[i]; return OK; }
    return NOT_FOUND;
}

nvmlReturn_t nvmlDeviceGetIndex(void *h, unsigned int *i) {
    DEV_OR_FAIL(h, C_OTHER);
    if (d->mig_parent >= 0) return NOT_SUPPORTED;
    *i = (unsigned int)(d - devs);
    return OK;
}

nvmlReturn_t nvmlDeviceGetUUID(void *h, char *out, unsigned int n) {
    DEV_OR_FAIL(h, C_OTHER);
    snprintf(out, n, "%s", d->uuid);
    return OK;
}

nvmlReturn_t nvmlDeviceGetName(void *h, char *out, unsigned int n) {
    DEV_OR_FAIL(h, C_OTHER);
    snprintf(out, n, "%s", d->name);
    return OK;
}

typedef struct {
    char busIdLegacy[16];
    unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
} pci_t;

nvmlReturn_t nvmlDeviceGetPciInfo_v3(void *h, pci_t *p) {
    DEV_OR_FAIL(h, C_OTHER);
    memset(p, 0, sizeof *p);
    snprintf(p->busId, sizeof p->busId, "%s", d->busid);
    snprintf(p->busIdLegacy, sizeof p->busIdLegacy, "%.15s", d->busid);
    return OK;
}

nvmlReturn_t nvmlDeviceGetMigMode(void *h, unsigned int *cur, unsigned int *pend) {
    DEV_OR_FAIL(h, C_OTHER);
    if (d->mig_parent >= 0) return NOT_SUPPORTED;
    *cur = *pend = d->mig_count > 0 ? 1 : 0;
    return OK;
}

nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(void *h, unsigned int *n) {
    DEV_OR_FAIL(h, C_OTHER);
    *n = (unsigned int)d->mig_count;
    return OK;
}

nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(void *h, unsigned int j, void **out) {
    DEV_OR_FAIL(h, C_OTHER);
    int parent = (int)(d - devs);
    unsigned int k = 0;
    for (int i = 0; i < nmig; i++) {
        if (migs[i].mig_parent == parent) {
            if (k == j) { *out = &migs[i]; return OK; }
            k++;
        }
    }
    return NOT_FOUND;
}

typedef struct { unsigned int gpu, memory; } util_t;

nvmlReturn_t nvmlDeviceGetUtilizationRates(void *h, util_t *u) {
    burn(C_UTIL);
    device_t *d = dev(h);
    if (!initialised) return UNINIT;
    if (!d) return INVALID_ARG;
    if (d->mig_parent >= 0) return NOT_SUPPORTED;
    d->polls++;
    if (lost(d)) return GPU_IS_LOST;
    u->gpu = cur_util(d);
    u->memory = cur_util(d) / 2;
    return OK;
}

#ifndef NO_SAMPLES
nvmlReturn_t nvmlDeviceGetSamples(void *h, int type, unsigned long long last_seen,
                                  int *val_type, unsigned int *count, sample_t *out) {
    burn(C_SAMPLES);
    device_t *d = dev(h);
    if (!initialised) return UNINIT;
    if (!d) return INVALID_ARG;
    if (d->nosamples) return NOT_SUPPORTED;
    if (type != 1 && type != 2) return NOT_SUPPORTED;
    if (type == 1 && out == NULL) d->polls++;
    if (lost(d)) return GPU_IS_LOST;
    advance(d);
    *val_type = 1; /* unsigned int */
    int first = d->nhistory > keep ? d->nhistory - keep : 0;
    unsigned int n = 0;
    for (int i = first; i < d->nhistory; i++) if (d->history[i].ts > last_seen) n++;
    if (n == 0) return NOT_FOUND;
    if (out == NULL) { *count = n; return OK; }
    if (*count < n) { *count = n; return INSUFFICIENT_SIZE; }
    unsigned int j = 0;
    for (int i = first; i < d->nhistory; i++) {
        if (d->history[i].ts > last_seen) {
            out[j].ts = d->history[i].ts;
            out[j].value = 0;
            unsigned int v = (unsigned int)d->history[i].value;
            if (type == 2) v /= 2;
            memcpy(&out[j].value, &v, sizeof v);
            j++;
        }
    }
    *count = j;
    return OK;
}
#endif

/* The memory the compute processes of the `procs` file hold on device
 * `me` (-100: a MIG instance, which has none listed). */
static unsigned long long procs_bytes(int me) {
    unsigned long long sum = 0;
    FILE *f = procs_file[0] ? fopen(procs_file, "r") : NULL;
    if (f) {
        int dv; unsigned int pid; unsigned long long bytes;
        while (fscanf(f, "%d %u %llu", &dv, &pid, &bytes) == 3)
            if (dv == me) sum += bytes;
        fclose(f);
    }
    return sum;
}

/* Memory in use: util% of the total, plus what the compute processes
 * hold (as on a real device, where a process cannot start, end or grow
 * without changing it). */
static unsigned long long mem_used(device_t *d) {
    int me = d->mig_parent >= 0 ? -100 : (int)(d - devs);
    unsigned long long used = d->mem_total / 100 * cur_util(d) + procs_bytes(me);
    return used < d->mem_total ? used : d->mem_total;
}

typedef struct { unsigned long long total, free, used; } mem_v1_t;
typedef struct { unsigned int version; unsigned long long total, reserved, free, used; } mem_v2_t;

nvmlReturn_t nvmlDeviceGetMemoryInfo(void *h, mem_v1_t *m) {
    DEV_OR_FAIL(h, C_MEM);
    m->total = d->mem_total;
    m->used = mem_used(d);
    m->free = m->total - m->used;
    return OK;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(void *h, mem_v2_t *m) {
    DEV_OR_FAIL(h, C_MEM_V2);
    m->total = d->mem_total;
    m->used = mem_used(d);
    m->reserved = 0;
    m->free = m->total - m->used;
    return OK;
}

nvmlReturn_t nvmlDeviceGetPowerUsage(void *h, unsigned int *mw) {
    DEV_OR_FAIL(h, C_POWER);
    if (d->mig_parent >= 0) return NOT_SUPPORTED;
    *mw = (100 + cur_util(d)) * 1000;
    return OK;
}

nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(void *h, unsigned long long *mj) {
    DEV_OR_FAIL(h, C_ENERGY);
    if (d->mig_parent >= 0) return NOT_SUPPORTED;
    advance(d);
    *mj = (unsigned long long)model_energy_mj(d, t0_us, now_us());
    return OK;
}

/* nvmlFieldValue_t is not modelled: a caller gets the cost and NOT_SUPPORTED. */
nvmlReturn_t nvmlDeviceGetFieldValues(void *h, int n, void *values) {
    (void)n; (void)values;
    DEV_OR_FAIL(h, C_FIELDS);
    return NOT_SUPPORTED;
}

nvmlReturn_t nvmlDeviceGetPerformanceState(void *h, unsigned int *p) {
    DEV_OR_FAIL(h, C_PSTATE);
    *p = 0;
    return OK;
}

nvmlReturn_t nvmlDeviceGetTemperature(void *h, int sensor, unsigned int *t) {
    DEV_OR_FAIL(h, C_TEMP);
    if (d->mig_parent >= 0) return NOT_SUPPORTED;
    if (sensor != 0) return NOT_SUPPORTED;
    *t = 30 + cur_util(d) / 2;
    return OK;
}

nvmlReturn_t nvmlDeviceGetClockInfo(void *h, int type, unsigned int *mhz) {
    DEV_OR_FAIL(h, C_CLOCK);
    if (d->mig_parent >= 0) return NOT_SUPPORTED;
    if (type != 1) return NOT_SUPPORTED; /* NVML_CLOCK_SM */
    *mhz = 1000 + 10 * cur_util(d);
    return OK;
}

typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId, computeInstanceId;
} proc_t;

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(void *h, unsigned int *count, proc_t *out) {
    DEV_OR_FAIL(h, C_PROCS);
    int me = d->mig_parent >= 0 ? -100 : (int)(d - devs);
    proc_t found[64];
    unsigned int n = 0;
    FILE *f = procs_file[0] ? fopen(procs_file, "r") : NULL;
    if (f) {
        int dv; unsigned int pid; unsigned long long bytes;
        while (n < 64 && fscanf(f, "%d %u %llu", &dv, &pid, &bytes) == 3) {
            if (dv == me) {
                found[n].pid = pid;
                found[n].usedGpuMemory = bytes;
                found[n].gpuInstanceId = 0xFFFFFFFF;
                found[n].computeInstanceId = 0xFFFFFFFF;
                n++;
            }
        }
        fclose(f);
    }
    if (out == NULL || *count < n) { *count = n; return n == 0 ? OK : INSUFFICIENT_SIZE; }
    memcpy(out, found, n * sizeof *out);
    *count = n;
    return OK;
}
