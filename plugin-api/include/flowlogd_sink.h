/*
 * flowlogd_sink.h — the flowlogd sink plugin ABI (major 1, minor 1).
 *
 * A sink plugin is a shared object that exports one function:
 *
 *     const flowlogd_sink_descriptor_t *flowlogd_sink_descriptor(void);
 *
 * The daemon looks it up by name (no load-time constructors), checks
 * abi_major == FLOWLOGD_SINK_ABI_MAJOR and refuses the plugin otherwise.
 * It also refuses a plugin whose abi_minor is newer than its own (such a
 * plugin would read record fields past the end of what the daemon fills);
 * an older minor loads and reads the prefix of each record it knows.
 *
 * Minor versions:
 *  - 1.0: the 18 fields of the flow log record, and `rule`.
 *  - 1.1: record extras pkt_srcaddr, pkt_dstaddr, tcp_flags, present,
 *    flow_start, flow_end; flowlogd_host.abi_minor. A sink may be given a
 *    `fields` option (FLOWLOGD_OPTION_OTHER, a TOML array of field names,
 *    already checked by the daemon: see README "Field lists"); the daemon
 *    never passes `fields` to a 1.0 plugin (configuring it is an error).
 *
 * Compatibility rules:
 *  - structs start with their version or size; fields are only appended;
 *  - records come as an array of pointers, so a plugin built against an
 *    older minor version reads the fields it knows and ignores the rest;
 *  - strings (flowlogd_str) are UTF-8 and NOT NUL-terminated.
 *
 * Threads: the daemon calls open, write, flush and close of one instance
 * from one worker thread, one call at a time (check may run on any thread). A call may block (that only
 * delays this sink), but should return within seconds so that shutdown is
 * prompt. Everything the daemon passes is valid only during the call.
 *
 * Errors: open, write and flush return FLOWLOGD_OK, FLOWLOGD_RETRY (transient:
 * the daemon keeps the batch and calls again with backoff) or
 * FLOWLOGD_REJECTED (permanent), and fill in *err with a message for the
 * operator and, for a configuration error, the option key it is about.
 */
#ifndef FLOWLOGD_SINK_H
#define FLOWLOGD_SINK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FLOWLOGD_SINK_ABI_MAJOR 1
#define FLOWLOGD_SINK_ABI_MINOR 1

typedef struct flowlogd_str {
    const char *ptr;
    size_t len;
} flowlogd_str;

#define FLOWLOGD_ADDR_NONE 0
#define FLOWLOGD_ADDR_IPV4 4
#define FLOWLOGD_ADDR_IPV6 6

/* IPv4 in bytes[0..4], IPv6 in bytes[0..16], network byte order. */
typedef struct flowlogd_addr {
    uint8_t family;
    uint8_t bytes[16];
} flowlogd_addr;

#define FLOWLOGD_DIRECTION_NONE 0
#define FLOWLOGD_DIRECTION_IN 1
#define FLOWLOGD_DIRECTION_OUT 2

#define FLOWLOGD_LOG_STATUS_OK 0
#define FLOWLOGD_LOG_STATUS_NODATA 1
#define FLOWLOGD_LOG_STATUS_SKIPDATA 2

#define FLOWLOGD_ACTION_NONE 0
#define FLOWLOGD_ACTION_ACCEPT 1
#define FLOWLOGD_ACTION_REJECT 2

/*
 * One flow log record: the 18 fields of the flow log format in output
 * order, then optional extras. For NODATA and SKIPDATA records the flow
 * fields (addresses, ports, protocol, direction, packets, bytes, action)
 * have no value and are written as "-".
 */
typedef struct flowlogd_record {
    uint32_t version;
    flowlogd_str vswitch_id;
    flowlogd_str vm_id;
    flowlogd_str vpc_id;
    flowlogd_str account_id;
    flowlogd_str eni_id;
    flowlogd_addr srcaddr;
    uint16_t srcport;
    flowlogd_addr dstaddr;
    uint16_t dstport;
    uint8_t protocol;   /* IANA protocol number */
    uint8_t direction;  /* FLOWLOGD_DIRECTION_* */
    uint64_t packets;
    uint64_t bytes;     /* IP-layer bytes */
    int64_t start;      /* Unix seconds, window start */
    int64_t end;        /* Unix seconds, window end */
    uint8_t log_status; /* FLOWLOGD_LOG_STATUS_* */
    uint8_t action;     /* FLOWLOGD_ACTION_* */
    /* --- minor 0 extras --- */
    flowlogd_str rule;  /* firewall rule of a REJECT record; len 0 if none */
    /* --- minor 1 extras (appended: a minor 0 plugin never reads them) --- */
    flowlogd_addr pkt_srcaddr; /* source on the other side of NAT (= srcaddr
                                  without NAT); FLOWLOGD_ADDR_NONE if unknown */
    flowlogd_addr pkt_dstaddr; /* destination on the other side of NAT */
    uint8_t tcp_flags;  /* FLOWLOGD_TCP_FLAG_*, OR-ed over the window */
    uint8_t present;    /* FLOWLOGD_HAS_*: which fields below / tcp_flags hold a value */
    int64_t flow_start; /* Unix seconds: the flow's first moment inside the window */
    int64_t flow_end;   /* Unix seconds: the flow's last moment inside the window */
} flowlogd_record;

#define FLOWLOGD_HAS_FLOW_START 1u
#define FLOWLOGD_HAS_FLOW_END 2u
#define FLOWLOGD_HAS_TCP_FLAGS 4u

/* tcp_flags bits, as AWS VPC flow logs encode them. */
#define FLOWLOGD_TCP_FLAG_FIN 1u
#define FLOWLOGD_TCP_FLAG_SYN 2u
#define FLOWLOGD_TCP_FLAG_RST 4u
#define FLOWLOGD_TCP_FLAG_SYN_ACK 18u /* SYN and ACK in one packet */

/* Filled in by the plugin on failure; both strings NUL-terminated. */
typedef struct flowlogd_error {
    char message[512];
    char key[64]; /* the option a config error is about, or "" */
} flowlogd_error;

#define FLOWLOGD_OPTION_STRING 1
#define FLOWLOGD_OPTION_INTEGER 2
#define FLOWLOGD_OPTION_FLOAT 3
#define FLOWLOGD_OPTION_BOOLEAN 4
#define FLOWLOGD_OPTION_OTHER 5 /* array, table, datetime: use .toml */

/* One key of the sink's config table (every key but "plugin"). */
typedef struct flowlogd_option {
    flowlogd_str key;
    uint8_t kind;      /* FLOWLOGD_OPTION_* */
    flowlogd_str text; /* strings unquoted; numbers, booleans as written */
    flowlogd_str toml; /* the value as TOML */
} flowlogd_option;

#define FLOWLOGD_LOG_ERROR 1
#define FLOWLOGD_LOG_WARN 2
#define FLOWLOGD_LOG_INFO 3
#define FLOWLOGD_LOG_DEBUG 4

/* What the daemon offers a plugin; log() may be called from any thread
 * until close returns. */
typedef struct flowlogd_host {
    uint32_t struct_size;
    flowlogd_str sink_name;
    flowlogd_str daemon_version;
    void (*log)(void *log_ctx, int level, const char *msg, size_t len);
    void *log_ctx;
    /* --- minor 1: read only if struct_size > offsetof(flowlogd_host,
     * abi_minor); a host without it fills the fields of minor 0 only. --- */
    uint16_t abi_minor; /* the host's FLOWLOGD_SINK_ABI_MINOR: the record
                           fields of that minor and older hold values */
} flowlogd_host;

/* The host's ABI minor (0 for a host whose flowlogd_host predates the
 * field): a plugin built against a newer minor reads only the record
 * fields this says the host fills. */
static inline uint16_t flowlogd_host_abi_minor(const flowlogd_host *host) {
    if (host == NULL || host->struct_size < offsetof(flowlogd_host, abi_minor) + sizeof(uint16_t)) {
        return 0;
    }
    return host->abi_minor;
}

#define FLOWLOGD_OK 0
#define FLOWLOGD_RETRY 1
#define FLOWLOGD_REJECTED 2

/* flush() flags */
#define FLOWLOGD_FLUSH_WINDOW_END 1u /* a capture window closed: make it durable */
#define FLOWLOGD_FLUSH_REOPEN 2u     /* reopen outputs (SIGHUP, logrotate) */

typedef struct flowlogd_sink_descriptor_t {
    uint16_t abi_major;   /* FLOWLOGD_SINK_ABI_MAJOR */
    uint16_t abi_minor;   /* FLOWLOGD_SINK_ABI_MINOR */
    uint32_t struct_size; /* sizeof(flowlogd_sink_descriptor_t) */
    const char *name;     /* NUL-terminated, e.g. "file" */
    const char *version;  /* NUL-terminated */
    /* Validate options (report every config error here, not at the first
     * write) and open the output; store the instance in *instance. */
    int (*open)(const flowlogd_host *host, const flowlogd_option *options,
                size_t option_count, void **instance, flowlogd_error *err);
    /* Deliver a batch of `count` records. */
    int (*write)(void *instance, const flowlogd_record *const *records,
                 size_t count, flowlogd_error *err);
    /* Push buffered output out; FLOWLOGD_FLUSH_* flags. */
    int (*flush)(void *instance, uint32_t flags, flowlogd_error *err);
    /* Release the instance; it is not used afterwards. */
    void (*close)(void *instance);
    /* Optional (may be NULL): validate options without side effects (no
     * files created, no connections made); `flowlogd check-config` calls it. */
    int (*check)(const flowlogd_host *host, const flowlogd_option *options,
                 size_t option_count, flowlogd_error *err);
} flowlogd_sink_descriptor_t;

/* The one symbol a plugin exports. */
const flowlogd_sink_descriptor_t *flowlogd_sink_descriptor(void);
typedef const flowlogd_sink_descriptor_t *(*flowlogd_sink_descriptor_fn)(void);

#if defined(__LP64__)
/* The same numbers are asserted on the Rust side (plugin-api/src/abi.rs). */
_Static_assert(sizeof(flowlogd_str) == 16, "flowlogd_str layout");
_Static_assert(sizeof(flowlogd_addr) == 17, "flowlogd_addr layout");
_Static_assert(offsetof(flowlogd_record, srcaddr) == 88, "record layout");
_Static_assert(offsetof(flowlogd_record, srcport) == 106, "record layout");
_Static_assert(offsetof(flowlogd_record, dstaddr) == 108, "record layout");
_Static_assert(offsetof(flowlogd_record, dstport) == 126, "record layout");
_Static_assert(offsetof(flowlogd_record, protocol) == 128, "record layout");
_Static_assert(offsetof(flowlogd_record, packets) == 136, "record layout");
_Static_assert(offsetof(flowlogd_record, start) == 152, "record layout");
_Static_assert(offsetof(flowlogd_record, log_status) == 168, "record layout");
_Static_assert(offsetof(flowlogd_record, action) == 169, "record layout");
_Static_assert(offsetof(flowlogd_record, rule) == 176, "record layout");
_Static_assert(offsetof(flowlogd_record, pkt_srcaddr) == 192, "record layout");
_Static_assert(offsetof(flowlogd_record, pkt_dstaddr) == 209, "record layout");
_Static_assert(offsetof(flowlogd_record, tcp_flags) == 226, "record layout");
_Static_assert(offsetof(flowlogd_record, present) == 227, "record layout");
_Static_assert(offsetof(flowlogd_record, flow_start) == 232, "record layout");
_Static_assert(offsetof(flowlogd_record, flow_end) == 240, "record layout");
_Static_assert(sizeof(flowlogd_record) == 248, "record layout");
_Static_assert(sizeof(flowlogd_error) == 576, "error layout");
_Static_assert(sizeof(flowlogd_option) == 56, "option layout");
_Static_assert(offsetof(flowlogd_host, abi_minor) == 56, "host layout");
_Static_assert(sizeof(flowlogd_host) == 64, "host layout");
_Static_assert(sizeof(flowlogd_sink_descriptor_t) == 64, "descriptor layout");
#endif

#ifdef __cplusplus
}
#endif

#endif /* FLOWLOGD_SINK_H */
