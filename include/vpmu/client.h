/* SPDX-License-Identifier: MIT */
/*
 * vpmu client library: talks to vpmud over its Unix socket
 * (docs/protocol.md). Used by vpmuctl and the libvirt hook.
 *
 * Every blocking call takes a deadline: an absolute CLOCK_MONOTONIC time in
 * microseconds (vpmu_client_now_usec() + budget), or 0 for "no limit". The
 * library waits with poll() and returns -ETIMEDOUT instead of passing it, so
 * a caller such as the libvirt hook can bound its whole run even when vpmud
 * hangs.
 *
 * Failures are negative errno values. When the daemon itself answered with
 * an error the return value is -EREMOTEIO and the vpmu_client_error says
 * what (its code is the stable contract); any other failure is local or of
 * the transport, and the error's message says which. After a transport
 * failure (timeout, closed connection, garbage from the server) the
 * connection is unusable: later calls return -ENOTCONN; close it.
 *
 * A connection is not thread-safe; use one per thread.
 */
#ifndef VPMU_CLIENT_H
#define VPMU_CLIENT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct json_object;
struct vpmu_client;

/* libvpmuclient.so is built with hidden visibility: only what this header
 * declares is its ABI (client/libvpmuclient.map lists the same names). */
#pragma GCC visibility push(default)
#ifdef __cplusplus
extern "C" {
#endif

#define VPMU_CLIENT_DEFAULT_SOCKET "/run/vpmu/vpmud.sock"
/* Environment variable that overrides the default socket path. */
#define VPMU_CLIENT_SOCKET_ENV "VPMU_SOCKET"
/* The protocol major version this library speaks. */
#define VPMU_CLIENT_PROTOCOL 1

struct vpmu_client_error {
	/* true: the daemon answered with this error; false: a local or
	 * transport failure (code is then ""). */
	bool remote;
	/* The daemon's error code ("not_found", "refused", ...), or "unknown"
	 * for a code newer than this library. */
	char code[32];
	int err;            /* positive errno */
	char field[96];     /* offending request member, or "" */
	char message[256];  /* always set on failure, for humans */
};

/* CLOCK_MONOTONIC now, in microseconds: the clock of every deadline. */
uint64_t vpmu_client_now_usec(void);

/* $VPMU_SOCKET when set and non-empty, else VPMU_CLIENT_DEFAULT_SOCKET. */
const char *vpmu_client_default_socket(void);

/*
 * Connects to 'path' (NULL: vpmu_client_default_socket()) and performs the
 * hello handshake, announcing 'client_name' (1..64 printable ASCII without
 * spaces, or NULL). Returns 0 and *out, or:
 *   -ENOENT, -ECONNREFUSED  vpmud is not running (no socket / nobody listening)
 *   -EACCES                 not allowed to open the socket (not in group vpmu?)
 *   -ETIMEDOUT              the deadline passed
 *   -EREMOTEIO              the daemon refused the hello (err says why,
 *                           e.g. unsupported_version)
 *   -EPROTO                 the peer does not speak this protocol
 *   -ENAMETOOLONG, -EINVAL, -ENOMEM
 */
int vpmu_client_connect(const char *path, const char *client_name, uint64_t deadline,
			struct vpmu_client **out, struct vpmu_client_error *err);

/* The server's version string from its hello answer ("vpmud/0.1.0"). */
const char *vpmu_client_server(const struct vpmu_client *c);

/*
 * Sends one request and waits for its answer. 'params' is borrowed (NULL for
 * none). On success returns 0 and *result, a new reference the caller
 * releases with json_object_put(). Events that arrive meanwhile (after
 * vpmu_client_watch) are kept for vpmu_client_next_event.
 * Returns -EREMOTEIO for a daemon error (see err), -ETIMEDOUT, -ECONNRESET
 * (vpmud closed the connection), -EPROTO (a malformed or mismatched
 * answer), -EMSGSIZE (an answer over 16 MiB; the connection is dropped),
 * -ENOTCONN (the connection failed earlier), -EINVAL, -ENOMEM.
 */
int vpmu_client_call(struct vpmu_client *c, const char *method, struct json_object *params,
		     uint64_t deadline, struct json_object **result, struct vpmu_client_error *err);

/*
 * vm.bind with the VM's route fd (docs/protocol.md, "vm.bind"): binds the
 * lease 'name' to VMM 'pid' and hands route_fd (created by the VMM with
 * KVM_CREATE_VPMU_ROUTE_FD, docs/kvm-api.md) to vpmud with the request, as
 * SCM_RIGHTS. vpmud keeps its own copy; the caller's stays open. *result
 * as for vpmu_client_call: name, generation, and the VM's "routes"
 * ("enforced", "simulated", "advisory") and "routes_why".
 * Returns -EBADF, before anything is sent, when route_fd is not open;
 * -EINVAL for a name or pid the protocol refuses; else as
 * vpmu_client_call (a route fd vpmud does not recognise is -EREMOTEIO,
 * invalid_param on params.route_fd).
 */
int vpmu_client_vm_bind_route_fd(struct vpmu_client *c, const char *name, pid_t pid, int route_fd,
				 uint64_t deadline, struct json_object **result, struct vpmu_client_error *err);

/* Subscribes to events; *generation (may be NULL) is the current plan
 * generation. Same returns as vpmu_client_call. */
int vpmu_client_watch(struct vpmu_client *c, uint64_t deadline, uint64_t *generation,
		      struct vpmu_client_error *err);

struct vpmu_client_event {
	char name[65];              /* "plan", or a name this client may not know */
	uint64_t generation;
	struct json_object *body;   /* the whole event object; owned */
};

/*
 * Takes the next event, waiting until 'deadline'. Returns 0 and fills *ev
 * (release with vpmu_client_event_fini), -ETIMEDOUT when none arrived in
 * time (the connection stays usable), or a failure as for
 * vpmu_client_call. A response arriving here, with no request pending, is
 * -EPROTO.
 */
int vpmu_client_next_event(struct vpmu_client *c, uint64_t deadline, struct vpmu_client_event *ev,
			   struct vpmu_client_error *err);
void vpmu_client_event_fini(struct vpmu_client_event *ev);

/* The socket, for callers that poll several things; only for POLLIN. */
int vpmu_client_fd(const struct vpmu_client *c);

/* Closes the connection and frees c (NULL is fine). */
void vpmu_client_close(struct vpmu_client *c);

#ifdef __cplusplus
}
#endif
#pragma GCC visibility pop

/* For __attribute__((cleanup)): closes *c. */
static inline void vpmu_client_closep(struct vpmu_client **c)
{
	vpmu_client_close(*c);
}

#endif
