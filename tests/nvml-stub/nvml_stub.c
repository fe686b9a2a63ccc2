/*
 * A stand-in for NVIDIA's libnvidia-ml.so.1, for tal's tests on machines
 * without an NVIDIA driver. It implements the NVML calls tal makes, with
 * NVML's signatures and return codes, driven by a script file named in
 * $NVML_STUB_CONFIG (read at nvmlInit):
 *
 *   init CODE                       nvmlInit_v2 returns CODE (9: driver not loaded, 4: no permission)
 *   device UUID BUSID MEM_TOTAL NAME   one device, in NVML's index order
 *   util DEV V1,V2,...              GPU utilisation per poll (the last one repeats)
 *   nosamples DEV                   nvmlDeviceGetSamples says NOT_SUPPORTED for DEV
 *   fail DEV N                      after N polls every call on DEV returns GPU_IS_LOST
 *   procs FILE                      compute processes, re-read at each call: lines "DEV PID BYTES"
 *   mig DEV N                       DEV is in MIG mode with N instances (UUIDs MIG-<DEV>-<J>;
 *                                   they answer memory queries, not utilisation, as on real MIG)
 *
 * A "poll" is one utilisation query: a nvmlDeviceGetSamples count query
 * (NULL buffer) for GPU utilisation, which also makes three new samples
 * 33.3 ms apart with that poll's value, or one nvmlDeviceGetUtilizationRates.
 * Memory utilisation samples are half the GPU value. Memory used is
 * util% of the total; power 100 W + util W; temperature 30 + util/2 C;
 * SM clock 1000 + 10 * util MHz.
 *
 * Built with -DNO_SAMPLES it lacks the nvmlDeviceGetSamples symbol (an
 * older driver), to test the fallback.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int nvmlReturn_t;
enum {
    OK = 0, UNINIT = 1, INVALID_ARG = 2, NOT_SUPPORTED = 3, NOT_FOUND = 6,
    INSUFFICIENT_SIZE = 7, GPU_IS_LOST = 15, UNKNOWN = 999
};

#define MAX_DEV 16
#define MAX_UTIL 256
#define MAX_SAMPLES 4096

typedef struct { unsigned long long ts; unsigned long long value; } sample_t;

typedef struct {
    char uuid[96];
    char busid[32];
    char name[96];
    unsigned long long mem_total;
    unsigned int util[MAX_UTIL];
    int nutil;
    int polls;
    int nosamples;
    int fail_after; /* -1: never */
    sample_t samples[MAX_SAMPLES];
    int nsamples;
    unsigned long long clock_us;
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

static int lost(device_t *d) { return d->fail_after >= 0 && d->polls > d->fail_after; }

static unsigned int cur_util(device_t *d) {
    if (d->nutil == 0) return 0;
    int i = d->polls > 0 ? d->polls - 1 : 0;
    if (i >= d->nutil) i = d->nutil - 1;
    return d->util[i];
}

static void load(void) {
    ndev = 0; nmig = 0; init_code = 0; procs_file[0] = 0;
    const char *path = getenv("NVML_STUB_CONFIG");
    if (!path) return;
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        char kw[32];
        if (sscanf(line, "%31s", kw) != 1) continue;
        if (!strcmp(kw, "init")) {
            sscanf(line, "%*s %d", &init_code);
        } else if (!strcmp(kw, "device") && ndev < MAX_DEV) {
            device_t *d = &devs[ndev++];
            memset(d, 0, sizeof *d);
            d->fail_after = -1;
            d->mig_parent = -1;
            d->clock_us = 1700000000000000ULL;
            sscanf(line, "%*s %95s %31s %llu %95[^\n]", d->uuid, d->busid, &d->mem_total, d->name);
        } else if (!strcmp(kw, "util")) {
            int i; char list[4000];
            if (sscanf(line, "%*s %d %3999s", &i, list) == 2 && i >= 0 && i < ndev) {
                device_t *d = &devs[i];
                for (char *t = strtok(list, ","); t && d->nutil < MAX_UTIL; t = strtok(NULL, ","))
                    d->util[d->nutil++] = (unsigned int)atoi(t);
            }
        } else if (!strcmp(kw, "nosamples")) {
            int i;
            if (sscanf(line, "%*s %d", &i) == 1 && i >= 0 && i < ndev) devs[i].nosamples = 1;
        } else if (!strcmp(kw, "fail")) {
            int i, n;
            if (sscanf(line, "%*s %d %d", &i, &n) == 2 && i >= 0 && i < ndev) devs[i].fail_after = n;
        } else if (!strcmp(kw, "mig")) {
            int i, n;
            if (sscanf(line, "%*s %d %d", &i, &n) == 2 && i >= 0 && i < ndev) {
                devs[i].mig_count = n;
                for (int j = 0; j < n && nmig < MAX_DEV; j++) {
                    device_t *m = &migs[nmig++];
                    memset(m, 0, sizeof *m);
                    m->fail_after = -1;
                    m->mig_parent = i;
                    m->nosamples = 1;
                    m->mem_total = devs[i].mem_total / (unsigned long long)n;
                    snprintf(m->uuid, sizeof m->uuid, "MIG-%d-%d", i, j);
                    snprintf(m->busid, sizeof m->busid, "%s", devs[i].busid);
                    snprintf(m->name, sizeof m->name, "%s MIG %d", devs[i].name, j);
                }
            }
        } else if (!strcmp(kw, "procs")) {
            sscanf(line, "%*s %511s", procs_file);
        }
    }
    fclose(f);
}

static device_t *dev(void *h) {
    for (int i = 0; i < ndev; i++) if (h == &devs[i]) return &devs[i];
    for (int i = 0; i < nmig; i++) if (h == &migs[i]) return &migs[i];
    return NULL;
}

#define DEV_OR_FAIL(h) \
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
nvmlReturn_t nvmlShutdown(void) { initialised = 0; return OK; }

const char *nvmlErrorString(nvmlReturn_t r) {
    switch (r) {
    case OK: return "Success";
    case UNINIT: return "Uninitialized";
    case NOT_SUPPORTED: return "Not Supported";
    case 4: return "Insufficient Permissions";
    case NOT_FOUND: return "Not Found";
    case 9: return "Driver Not Loaded";
    case GPU_IS_LOST: return "GPU is lost";
    default: return "Unknown Error";
    }
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *v, unsigned int n) {
    snprintf(v, n, "550.54.15");
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
    DEV_OR_FAIL(h);
    if (d->mig_parent >= 0) return NOT_SUPPORTED;
    *i = (unsigned int)(d - devs);
    return OK;
}

nvmlReturn_t nvmlDeviceGetUUID(void *h, char *out, unsigned int n) {
    DEV_OR_FAIL(h);
    snprintf(out, n, "%s", d->uuid);
    return OK;
}

nvmlReturn_t nvmlDeviceGetName(void *h, char *out, unsigned int n) {
    DEV_OR_FAIL(h);
    snprintf(out, n, "%s", d->name);
    return OK;
}

typedef struct {
    char busIdLegacy[16];
    unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
} pci_t;

nvmlReturn_t nvmlDeviceGetPciInfo_v3(void *h, pci_t *p) {
    DEV_OR_FAIL(h);
    memset(p, 0, sizeof *p);
    snprintf(p->busId, sizeof p->busId, "%s", d->busid);
    snprintf(p->busIdLegacy, sizeof p->busIdLegacy, "%.15s", d->busid);
    return OK;
}

nvmlReturn_t nvmlDeviceGetMigMode(void *h, unsigned int *cur, unsigned int *pend) {
    DEV_OR_FAIL(h);
    if (d->mig_parent >= 0) return NOT_SUPPORTED;
    *cur = *pend = d->mig_count > 0 ? 1 : 0;
    return OK;
}

nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(void *h, unsigned int *n) {
    DEV_OR_FAIL(h);
    *n = (unsigned int)d->mig_count;
    return OK;
}

nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(void *h, unsigned int j, void **out) {
    DEV_OR_FAIL(h);
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
    device_t *d = dev(h);
    if (!initialised) return UNINIT;
    if (!d) return INVALID_ARG;
    if (d->nosamples) return NOT_SUPPORTED;
    if (type != 1 && type != 2) return NOT_SUPPORTED;
    if (type == 1 && out == NULL) {
        d->polls++;
        if (!lost(d) && d->nsamples + 3 <= MAX_SAMPLES) {
            for (int k = 0; k < 3; k++) {
                d->clock_us += 33333;
                d->samples[d->nsamples].ts = d->clock_us;
                d->samples[d->nsamples].value = cur_util(d);
                d->nsamples++;
            }
        }
    }
    if (lost(d)) return GPU_IS_LOST;
    *val_type = 1; /* unsigned int */
    unsigned int n = 0;
    for (int i = 0; i < d->nsamples; i++) if (d->samples[i].ts > last_seen) n++;
    if (n == 0) return NOT_FOUND;
    if (out == NULL) { *count = n; return OK; }
    if (*count < n) { *count = n; return INSUFFICIENT_SIZE; }
    unsigned int j = 0;
    for (int i = 0; i < d->nsamples; i++) {
        if (d->samples[i].ts > last_seen) {
            out[j].ts = d->samples[i].ts;
            out[j].value = 0;
            unsigned int v = (unsigned int)d->samples[i].value;
            if (type == 2) v /= 2;
            memcpy(&out[j].value, &v, sizeof v);
            j++;
        }
    }
    *count = j;
    return OK;
}
#endif

typedef struct { unsigned int version; unsigned long long total, reserved, free, used; } mem_v2_t;

nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(void *h, mem_v2_t *m) {
    DEV_OR_FAIL(h);
    m->total = d->mem_total;
    m->used = d->mem_total / 100 * cur_util(d);
    m->reserved = 0;
    m->free = m->total - m->used;
    return OK;
}

nvmlReturn_t nvmlDeviceGetPowerUsage(void *h, unsigned int *mw) {
    DEV_OR_FAIL(h);
    if (d->mig_parent >= 0) return NOT_SUPPORTED;
    *mw = (100 + cur_util(d)) * 1000;
    return OK;
}

nvmlReturn_t nvmlDeviceGetTemperature(void *h, int sensor, unsigned int *t) {
    DEV_OR_FAIL(h);
    if (d->mig_parent >= 0) return NOT_SUPPORTED;
    if (sensor != 0) return NOT_SUPPORTED;
    *t = 30 + cur_util(d) / 2;
    return OK;
}

nvmlReturn_t nvmlDeviceGetClockInfo(void *h, int type, unsigned int *mhz) {
    DEV_OR_FAIL(h);
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
    DEV_OR_FAIL(h);
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
