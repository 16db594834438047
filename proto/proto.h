/* SPDX-License-Identifier: MIT */
/*
 * proto: the vpmud socket protocol, version PROTO_VERSION. Pure
 * encode/decode/validate over json-c; no sockets, no daemon state.
 *
 * Server side: proto_request_decode() turns one frame into a validated
 * struct proto_request or a struct proto_error ready for
 * response_error() (response.h). Client side: proto_request_encode()
 * builds the request, response_decode() classifies what comes back.
 * docs/protocol.md is the contract; this header is its C mirror.
 */
#ifndef VPMU_PROTO_H
#define VPMU_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/cpulist.h"
#include "proto/frame.h"

struct json_object;

/* Major protocol version; bumped only for incompatible changes. Additions
 * (new methods, new optional result fields) keep the number. */
#define PROTO_VERSION 1

#define PROTO_NAME_MAX 64           /* VM / session names */
#define PROTO_CLIENT_MAX 64         /* hello.client */
#define PROTO_EVENT_MAX 256         /* one perf event spec */
#define PROTO_MAX_EVENTS 64
#define PROTO_MAX_VCPUS 1024
#define PROTO_MAX_PRIORITY 1000
#define PROTO_DEFAULT_PRIORITY 100
#define PROTO_MAX_GP 32             /* PERF_GLOBAL_CTRL bits 0..31 */
#define PROTO_MAX_FIXED_MASK 0xffffu /* PERF_GLOBAL_CTRL bits 32..47 */
#define PROTO_MAX_PID 4194304       /* PID_MAX_LIMIT on 64-bit */
#define PROTO_MAX_ID UINT64_C(9007199254740991) /* 2^53-1: exact in every JSON reader */
#define PROTO_FIELD_MAX 96
#define PROTO_MESSAGE_MAX 256

/* Stable error codes. The string form is the contract; the numbering is
 * internal and may change. */
enum proto_errcode {
	PROTO_E_BAD_REQUEST = 0,
	PROTO_E_UNKNOWN_METHOD,
	PROTO_E_UNKNOWN_FIELD,
	PROTO_E_INVALID_PARAM,
	PROTO_E_TOO_LARGE,
	PROTO_E_UNSUPPORTED_VERSION,
	PROTO_E_PERMISSION_DENIED,
	PROTO_E_NOT_FOUND,
	PROTO_E_EXISTS,
	PROTO_E_REFUSED,
	PROTO_E_BUSY,
	PROTO_E_INTERNAL,
	/* A code this client does not know (a newer server); never sent. */
	PROTO_E_UNKNOWN,
	PROTO_E__COUNT
};

const char *proto_errcode_name(enum proto_errcode code);
/* PROTO_E_UNKNOWN for anything unrecognised, so old clients degrade. */
enum proto_errcode proto_errcode_from_name(const char *name);
/* Default errno for a code (positive), used when a failure has no better one. */
int proto_errcode_errno(enum proto_errcode code);
/* Best code for a negative errno returned by daemon code. */
enum proto_errcode proto_errcode_from_errno(int neg_errno);

struct proto_error {
	enum proto_errcode code;
	int err;                          /* positive errno */
	char field[PROTO_FIELD_MAX];      /* "params.vcpus[2].cpus" or "" */
	char message[PROTO_MESSAGE_MAX];
};

/* Fill 'e' (field may be NULL); returns -e->err so callers can
 * 'return proto_error_set(...)'. */
int proto_error_set(struct proto_error *e, enum proto_errcode code, int err,
		    const char *field, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

/* The one way to say "out of memory" (PROTO_E_INTERNAL, ENOMEM); returns
 * -ENOMEM. */
int proto_error_oom(struct proto_error *e);

enum proto_method {
	PROTO_M_HELLO = 0,
	PROTO_M_STATUS,
	PROTO_M_PMU,
	PROTO_M_PLAN,
	PROTO_M_VM_ATTACH,
	PROTO_M_VM_DETACH,
	PROTO_M_VM_UPDATE,
	PROTO_M_VM_LIST,
	PROTO_M_VM_SHOW,
	PROTO_M_SESSION_START,
	PROTO_M_SESSION_STOP,
	PROTO_M_SESSION_READ,
	PROTO_M_SESSION_LIST,
	PROTO_M_WATCH,
	PROTO_M_VM_BIND,
	PROTO_M_METRICS,           /* the metrics text (docs/metrics.md) */
	PROTO_M__COUNT
};

const char *proto_method_name(enum proto_method m);
/* -ENOENT for an unknown name. */
int proto_method_from_name(const char *name);

enum proto_class {
	PROTO_CLASS_GUARANTEED = 0,
	PROTO_CLASS_PREFERRED,
	PROTO_CLASS_SHARED,
	PROTO_CLASS__COUNT
};

const char *proto_class_name(enum proto_class c);
int proto_class_from_name(const char *name); /* -ENOENT */

struct proto_hello {
	uint32_t protocol;
	char client[PROTO_CLIENT_MAX + 1];
};

struct proto_plan_req {
	bool has_cpus;
	struct cpulist cpus;
};

struct proto_owner {
	int32_t pid;    /* the VMM */
	int32_t vm_fd;  /* its KVM VM fd number */
};

/* vCPU i may run on vcpus[i]. Both wire forms (per-vCPU array, or
 * vcpu_count + one cpus) decode to this array. */
struct proto_vcpus {
	uint32_t count;
	struct cpulist *cpus; /* count entries, heap */
};

struct proto_vm_attach {
	char name[PROTO_NAME_MAX + 1];
	/* Absent on the wire: the daemon's configured defaults apply (the
	 * values then hold the protocol's own defaults). */
	bool has_priority, has_class;
	uint32_t priority;
	enum proto_class cls;
	uint32_t gp;
	uint32_t fixed_mask;
	struct proto_vcpus vcpus;
	bool has_owner;
	struct proto_owner owner;
};

struct proto_vm_update {
	char name[PROTO_NAME_MAX + 1];
	bool has_priority, has_class, has_gp, has_fixed_mask, has_vcpus;
	uint32_t priority;
	enum proto_class cls;
	uint32_t gp;
	uint32_t fixed_mask;
	struct proto_vcpus vcpus;
};

struct proto_session_start {
	char name[PROTO_NAME_MAX + 1];
	uint32_t n_events;
	char **events;          /* n_events strings, heap */
	bool has_cpus;          /* exactly one of cpus / pid */
	struct cpulist cpus;
	int32_t pid;
	uint32_t priority;
	enum proto_class cls;
	int32_t owner_pid;      /* 0: the requesting process owns the session */
	/* The session needs guest time counted (its hardware events without
	 * exclude_guest): refused where the host cannot (the mediated vPMU).
	 * false: no demand; whether guest time is counted is the host's
	 * vPMU flavour's (status says). */
	bool count_guest;
};

/* Binds an existing lease to its VMM once that process exists (the
 * libvirt hook at "started": admission happened at "prepare", before QEMU
 * ran). Without vm_fd the daemon looks for the KVM VM fd in /proc/PID/fd. */
struct proto_vm_bind {
	char name[PROTO_NAME_MAX + 1];
	int32_t pid;
	bool has_vm_fd;
	int32_t vm_fd;
	/* The VMM's route fd rides with the request (SCM_RIGHTS on the
	 * socket, an "h" option on D-Bus); docs/kvm-api.md. */
	bool route_fd;
};

/* Methods whose only parameter is a name. */
struct proto_name_req {
	char name[PROTO_NAME_MAX + 1];
};

struct proto_request {
	uint64_t id;
	enum proto_method method;
	union {
		struct proto_hello hello;
		struct proto_plan_req plan;
		struct proto_vm_attach vm_attach;
		struct proto_vm_update vm_update;
		struct proto_name_req vm_detach, vm_show;
		struct proto_session_start session_start;
		struct proto_name_req session_stop, session_read;
		struct proto_vm_bind vm_bind;
	} u;
};

/* Release heap members; safe on a zeroed or already finished request. */
void proto_request_fini(struct proto_request *req);

/*
 * Decode and validate one frame (as returned by frame_reader_next) against
 * CPU numbers < max_cpus. On success returns 0 and fills *req (call
 * proto_request_fini). On failure returns a negative errno, fills *err, and
 * sets *id_known and *id when the request id could be read, so the error
 * response can carry it.
 */
int proto_request_decode(const char *frame, size_t len, unsigned int max_cpus,
			 struct proto_request *req, bool *id_known, uint64_t *id,
			 struct proto_error *err);

/* Same, from an already parsed object (used by the decoder and tests). */
int proto_request_from_json(struct json_object *obj, unsigned int max_cpus,
			    struct proto_request *req, bool *id_known, uint64_t *id,
			    struct proto_error *err);

/*
 * Validates a typed request exactly as proto_request_decode does after
 * reading JSON (names, ranges, classes, CPU numbers < max_cpus, vCPU
 * counts), for doors that decode their own encoding (D-Bus). The one place
 * where the rules live; error fields are named as on the wire
 * ("params.gp").
 */
int proto_request_validate(const struct proto_request *req, unsigned int max_cpus,
			   struct proto_error *err);

/*
 * Client side: the JSON form of a validated request (defaults written out
 * explicitly). Returns a new object or NULL on allocation failure or an
 * invalid struct (unknown method, count out of range).
 */
struct json_object *proto_request_encode(const struct proto_request *req);

/*
 * The same request's params object alone (a new reference), as a client
 * library call takes it, without the members named in omit (NULL-ended; may
 * be NULL): a client leaves out what its user did not give, so that the
 * daemon applies its own configured defaults. NULL as for
 * proto_request_encode.
 */
struct json_object *proto_request_encode_params(const struct proto_request *req, const char *const *omit);

/*
 * The protocol's name rule (docs/protocol.md, "name"), for VM and session
 * names wherever they come from: 1..PROTO_NAME_MAX characters of
 * [A-Za-z0-9._-], not "." or ".." (names become file names under the state
 * directory). The decoder applies it to params.name; vpmuctl, the hook and
 * the domain metadata parser call it so their refusals say the daemon's
 * words. Returns 0, or -EINVAL with err (field: what) saying
 * "<what>: must be 1..64 characters", "<what>: only A-Z a-z 0-9 . _ -
 * allowed" or "<what>: "." and ".." are reserved". err may be NULL.
 */
int proto_name_check(const char *what, const char *name, struct proto_error *err);

/*
 * fixed_mask as text, for the doors that read it from a command line
 * (vpmuctl --fixed) or an XML attribute (<vpmu:pmu fixed=...>): decimal
 * digits, or "0x" (lower-case x) + 1..4 hex digits as the protocol's
 * string form; 0..PROTO_MAX_FIXED_MASK. No sign, space, "0X" or octal.
 * Returns 0 or -EINVAL; the caller words the message.
 */
int proto_fixed_mask_parse(const char *s, uint32_t *out);

/* Check a server's hello answer against what this client speaks. */
int proto_hello_check(uint32_t client_protocol, uint32_t server_protocol,
		      struct proto_error *err);

#endif
