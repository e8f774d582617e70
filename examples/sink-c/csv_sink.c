/*
 * An example of a custom flowlogd sink written in C: flow log records as
 * CSV lines (a header line, then the 18 fields in the flow log's order).
 *
 * Build:   cc -std=c11 -O2 -Wall -Wextra -fPIC -shared \
 *             -I ../../plugin-api/include -o csv.so csv_sink.c
 * Install: copy csv.so into daemon.plugin_dir (owned by root, mode 0644)
 * Config:
 *     [sinks.csv]
 *     plugin = "csv"
 *     path = "/var/log/flowlogd/flows.csv"
 *
 * Everything the daemon passes is valid only during the call, strings are
 * not NUL-terminated (use the length), and errors go back through *err.
 */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "flowlogd_sink.h"

typedef struct csv_sink {
    FILE *out;
} csv_sink;

static void set_error(flowlogd_error *err, const char *key, const char *fmt, const char *arg) {
    if (err == NULL) {
        return;
    }
    snprintf(err->message, sizeof err->message, fmt, arg);
    snprintf(err->key, sizeof err->key, "%s", key ? key : "");
}

static int str_eq(flowlogd_str s, const char *lit) {
    size_t n = strlen(lit);
    return s.len == n && memcmp(s.ptr, lit, n) == 0;
}

/* Finds `path` among the options; rejects any other key. */
static int parse_options(const flowlogd_option *options, size_t count, char *path, size_t path_size,
                         flowlogd_error *err) {
    path[0] = '\0';
    for (size_t i = 0; i < count; i++) {
        const flowlogd_option *o = &options[i];
        if (str_eq(o->key, "path")) {
            if (o->kind != FLOWLOGD_OPTION_STRING || o->text.len == 0 || o->text.len >= path_size ||
                o->text.ptr[0] != '/') {
                set_error(err, "path", "expected an absolute path%s", "");
                return FLOWLOGD_REJECTED;
            }
            memcpy(path, o->text.ptr, o->text.len);
            path[o->text.len] = '\0';
        } else {
            char key[64];
            size_t n = o->key.len < sizeof key - 1 ? o->key.len : sizeof key - 1;
            memcpy(key, o->key.ptr, n);
            key[n] = '\0';
            set_error(err, key, "unknown option `%s`, expected `path`", key);
            return FLOWLOGD_REJECTED;
        }
    }
    if (path[0] == '\0') {
        set_error(err, "path", "missing option `path`%s", "");
        return FLOWLOGD_REJECTED;
    }
    return FLOWLOGD_OK;
}

static int csv_check(const flowlogd_host *host, const flowlogd_option *options, size_t count,
                     flowlogd_error *err) {
    (void)host;
    char path[4096];
    return parse_options(options, count, path, sizeof path, err);
}

static int csv_open(const flowlogd_host *host, const flowlogd_option *options, size_t count,
                    void **instance, flowlogd_error *err) {
    char path[4096];
    int rc = parse_options(options, count, path, sizeof path, err);
    if (rc != FLOWLOGD_OK) {
        return rc;
    }
    FILE *out = fopen(path, "a");
    if (out == NULL) {
        set_error(err, "path", "cannot open the file: %s", strerror(errno));
        return FLOWLOGD_REJECTED;
    }
    if (ftell(out) == 0) {
        fputs("version,vswitch-id,vm-id,vpc-id,account-id,eni-id,srcaddr,srcport,dstaddr,dstport,"
              "protocol,direction,packets,bytes,start,end,log-status,action\n",
              out);
    }
    csv_sink *sink = calloc(1, sizeof *sink);
    if (sink == NULL) {
        fclose(out);
        set_error(err, NULL, "out of memory%s", "");
        return FLOWLOGD_RETRY;
    }
    sink->out = out;
    *instance = sink;
    if (host != NULL && host->log != NULL) {
        static const char msg[] = "csv sink opened";
        host->log(host->log_ctx, FLOWLOGD_LOG_INFO, msg, sizeof msg - 1);
    }
    return FLOWLOGD_OK;
}

static void put_str(FILE *out, flowlogd_str s) {
    if (s.len == 0) {
        fputc('-', out);
    } else {
        fwrite(s.ptr, 1, s.len, out);
    }
}

static void put_addr(FILE *out, const flowlogd_addr *a) {
    char buf[INET6_ADDRSTRLEN];
    const char *text = NULL;
    if (a->family == FLOWLOGD_ADDR_IPV4) {
        text = inet_ntop(AF_INET, a->bytes, buf, sizeof buf);
    } else if (a->family == FLOWLOGD_ADDR_IPV6) {
        text = inet_ntop(AF_INET6, a->bytes, buf, sizeof buf);
    }
    fputs(text ? text : "-", out);
}

static const char *log_status_name(uint8_t s) {
    switch (s) {
    case FLOWLOGD_LOG_STATUS_NODATA:
        return "NODATA";
    case FLOWLOGD_LOG_STATUS_SKIPDATA:
        return "SKIPDATA";
    default:
        return "OK";
    }
}

static int csv_write(void *instance, const flowlogd_record *const *records, size_t count,
                     flowlogd_error *err) {
    csv_sink *sink = instance;
    for (size_t i = 0; i < count; i++) {
        const flowlogd_record *r = records[i];
        fprintf(sink->out, "%u,", r->version);
        put_str(sink->out, r->vswitch_id);
        fputc(',', sink->out);
        put_str(sink->out, r->vm_id);
        fputc(',', sink->out);
        put_str(sink->out, r->vpc_id);
        fputc(',', sink->out);
        put_str(sink->out, r->account_id);
        fputc(',', sink->out);
        put_str(sink->out, r->eni_id);
        fputc(',', sink->out);
        if (r->log_status == FLOWLOGD_LOG_STATUS_OK) {
            put_addr(sink->out, &r->srcaddr);
            fprintf(sink->out, ",%u,", r->srcport);
            put_addr(sink->out, &r->dstaddr);
            fprintf(sink->out, ",%u,%u,%s,%llu,%llu,", r->dstport, r->protocol,
                    r->direction == FLOWLOGD_DIRECTION_OUT ? "out" : "in",
                    (unsigned long long)r->packets, (unsigned long long)r->bytes);
        } else {
            fputs("-,-,-,-,-,-,-,-,", sink->out);
        }
        fprintf(sink->out, "%lld,%lld,%s,%s\n", (long long)r->start, (long long)r->end,
                log_status_name(r->log_status),
                r->log_status != FLOWLOGD_LOG_STATUS_OK ? "-"
                : r->action == FLOWLOGD_ACTION_REJECT  ? "REJECT"
                                                       : "ACCEPT");
    }
    if (fflush(sink->out) != 0) {
        set_error(err, NULL, "write failed: %s", strerror(errno));
        return FLOWLOGD_RETRY;
    }
    return FLOWLOGD_OK;
}

static int csv_flush(void *instance, uint32_t flags, flowlogd_error *err) {
    csv_sink *sink = instance;
    if (fflush(sink->out) != 0 ||
        ((flags & FLOWLOGD_FLUSH_WINDOW_END) && fsync(fileno(sink->out)) != 0)) {
        set_error(err, NULL, "flush failed: %s", strerror(errno));
        return FLOWLOGD_RETRY;
    }
    return FLOWLOGD_OK;
}

static void csv_close(void *instance) {
    csv_sink *sink = instance;
    fclose(sink->out);
    free(sink);
}

static const flowlogd_sink_descriptor_t descriptor = {
    .abi_major = FLOWLOGD_SINK_ABI_MAJOR,
    .abi_minor = FLOWLOGD_SINK_ABI_MINOR,
    .struct_size = sizeof(flowlogd_sink_descriptor_t),
    .name = "csv",
    .version = "0.1.0",
    .open = csv_open,
    .write = csv_write,
    .flush = csv_flush,
    .close = csv_close,
    .check = csv_check,
};

const flowlogd_sink_descriptor_t *flowlogd_sink_descriptor(void) {
    return &descriptor;
}
