/* SPDX-License-Identifier: MIT */
/*
 * vpmuctl: the operator's command line for vpmud (docs/vpmuctl.1.md).
 * Options are checked here, before anything is sent, so that a typo gets a
 * message naming the option rather than a protocol field path; the daemon
 * still validates everything again.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "proto/cleanup.h"
#include "proto/cpulist.h"
#include "proto/json_fields.h"
#include "proto/proto.h"
#include "vpmu/client.h"

#define EXIT_DAEMON 1
#define EXIT_USAGE 2
#define EXIT_CONNECT 3

#define CLIENT_NAME "vpmuctl/0.1"
#define DEFAULT_TIMEOUT_USEC (10 * 1000000ull)
#define MAX_INTERVAL_MS (3600 * 1000)

struct ctl {
	const char *prog;
	const char *socket;
	bool json;
	uint64_t timeout_usec;   /* per request */
	bool timeout_given;      /* watch: only an explicit --timeout ends it */
	const char *cmd;         /* "vm attach", for messages */
	struct vpmu_client *c;
};

/* ------------------------------------------------------------ messages */

__attribute__((format(printf, 2, 3)))
static int usage_error(const struct ctl *x, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "vpmuctl: %s%s", x->cmd ? x->cmd : "", x->cmd ? ": " : "");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'vpmuctl --help'.\n");
	return EXIT_USAGE;
}

static int call_failed(int r, const struct vpmu_client_error *e)
{
	if (r == -EREMOTEIO) {
		fprintf(stderr, "vpmuctl: %s: %s", e->code, e->message);
		/* most messages already start with the field path */
		if (e->field[0] && strncmp(e->message, e->field, strlen(e->field)))
			fprintf(stderr, " (field %s)", e->field);
		fputc('\n', stderr);
	} else {
		fprintf(stderr, "vpmuctl: %s\n", e->message[0] ? e->message : strerror(-r));
	}
	return EXIT_DAEMON;
}

static void oom(void)
{
	fprintf(stderr, "vpmuctl: out of memory\n");
	exit(EXIT_DAEMON);
}

static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (!p)
		oom();
	return p;
}

static char *xstrdup(const char *s)
{
	char *p = strdup(s);

	if (!p)
		oom();
	return p;
}

__attribute__((format(printf, 1, 2)))
static char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	s = alloc_vprintf(fmt, ap);
	va_end(ap);
	if (!s)
		oom();
	return s;
}

/* ------------------------------------------------------ option parsing */

struct opt {
	const char *name;   /* without the dashes */
	bool has_arg;
	bool seen;
	const char *val;
};

/*
 * Splits args into the options of 'opts' ("--name VALUE" or "--name=VALUE")
 * and up to 'maxpos' positional arguments. Returns 0 or EXIT_USAGE (after
 * saying what was wrong).
 */
static int parse_opts(const struct ctl *x, int argc, char **argv, struct opt *opts, size_t nopts,
		      const char **pos, size_t maxpos, size_t *npos)
{
	*npos = 0;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];

		if (strncmp(a, "--", 2) != 0 || a[2] == 0) {
			if (a[0] == '-' && a[1] && strcmp(a, "--"))
				return usage_error(x, "unknown option '%s'", a);
			if (*npos >= maxpos)
				return usage_error(x, "unexpected argument '%s'", a);
			pos[(*npos)++] = a;
			continue;
		}
		const char *eq = strchr(a + 2, '=');
		size_t n = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
		struct opt *o = NULL;

		for (size_t k = 0; k < nopts; k++)
			if (strlen(opts[k].name) == n && !strncmp(opts[k].name, a + 2, n))
				o = &opts[k];
		if (!o)
			return usage_error(x, "unknown option '%.*s'", (int)(n + 2), a);
		if (o->seen)
			return usage_error(x, "option --%s given twice", o->name);
		o->seen = true;
		if (!o->has_arg) {
			if (eq)
				return usage_error(x, "option --%s takes no value", o->name);
			continue;
		}
		if (eq) {
			o->val = eq + 1;
		} else {
			if (i + 1 >= argc)
				return usage_error(x, "option --%s needs a value", o->name);
			o->val = argv[++i];
		}
	}
	return 0;
}

/* Decimal integer in [min, max], the whole string. */
static int parse_int(const struct ctl *x, const char *opt, const char *s, long long min, long long max,
		     long long *out)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (!*s || *end || errno || v < min || v > max || (s[0] == '+' || s[0] == ' '))
		return usage_error(x, "%s: must be an integer %lld..%lld, got \"%s\"", opt, min, max, s);
	*out = v;
	return 0;
}

static int parse_u32(const struct ctl *x, const char *opt, const char *s, uint32_t min, uint32_t max,
		     uint32_t *out)
{
	long long v = 0;
	int r = parse_int(x, opt, s, min, max, &v);

	if (r == 0)
		*out = (uint32_t)v;
	return r;
}

static int parse_fixed(const struct ctl *x, const char *s, uint32_t *out)
{
	if (proto_fixed_mask_parse(s, out) < 0)
		return usage_error(x, "--fixed: must be a mask 0..0xffff (decimal, or 0x and 1..4 hex digits), got \"%s\"",
				   s);
	return 0;
}

static int parse_cpus(const struct ctl *x, const char *opt, const char *s, struct cpulist *out)
{
	int r = cpulist_parse(s, CPULIST_MAX_CPUS, out);

	if (r == -ERANGE)
		return usage_error(x, "%s: CPU numbers must be below %u, got \"%s\"", opt, CPULIST_MAX_CPUS, s);
	if (r < 0)
		return usage_error(x, "%s: not a CPU list like \"0-3,8\", got \"%s\"", opt, s);
	return 0;
}

static int parse_class(const struct ctl *x, const char *s, enum proto_class *out)
{
	int c = proto_class_from_name(s);

	if (c < 0)
		return usage_error(x, "--class: must be guaranteed, preferred or shared, got \"%s\"", s);
	*out = (enum proto_class)c;
	return 0;
}

/* The protocol's name rule, checked here so the message names the argument
 * (in the daemon's words, and with what was given). */
static int check_name(const struct ctl *x, const char *what, const char *s)
{
	struct proto_error e;

	if (proto_name_check(what, s, &e) < 0)
		return usage_error(x, "%s (got \"%s\")", e.message, s);
	return 0;
}

/* --------------------------------------------------------- result access */

static struct json_object *get(struct json_object *o, const char *key)
{
	struct json_object *v = NULL;

	if (!o || !json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, key, &v))
		return NULL;
	return v;
}

static const char *get_str(struct json_object *o, const char *key)
{
	struct json_object *v = get(o, key);

	return json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

static bool get_i64(struct json_object *o, const char *key, int64_t *out)
{
	struct json_object *v = get(o, key);

	if (!json_object_is_type(v, json_type_int))
		return false;
	*out = json_object_get_int64(v);
	return true;
}

/* Counters are unsigned 64-bit; json-c keeps values above INT64_MAX as such. */
static bool get_u64(struct json_object *o, const char *key, uint64_t *out)
{
	struct json_object *v = get(o, key);

	if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0)
		return false;
	*out = json_object_get_uint64(v);
	return true;
}

static bool get_num(struct json_object *o, const char *key, double *out)
{
	struct json_object *v = get(o, key);

	if (!json_object_is_type(v, json_type_int) && !json_object_is_type(v, json_type_double))
		return false;
	*out = json_object_get_double(v);
	return true;
}

static bool get_bool(struct json_object *o, const char *key, bool *out)
{
	struct json_object *v = get(o, key);

	if (!json_object_is_type(v, json_type_boolean))
		return false;
	*out = json_object_get_boolean(v);
	return true;
}

static struct json_object *get_arr(struct json_object *o, const char *key)
{
	struct json_object *v = get(o, key);

	return json_object_is_type(v, json_type_array) ? v : NULL;
}

static size_t arr_len(struct json_object *a)
{
	return a ? json_object_array_length(a) : 0;
}

/* A member as text whatever its JSON type; "-" when absent. */
static char *fmt_any(struct json_object *o, const char *key)
{
	struct json_object *v = get(o, key);

	if (!v)
		return xstrdup("-");
	if (json_object_is_type(v, json_type_string))
		return xstrdup(json_object_get_string(v));
	return xstrdup(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
}

static void print_json(struct json_object *o, bool compact)
{
	puts(json_object_to_json_string_ext(o, compact ? JSON_C_TO_STRING_PLAIN
						       : JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED));
}

/* --json: the daemon's result as it came, consumed here. */
static bool printed_as_json(const struct ctl *x, struct json_object *res)
{
	if (!x->json)
		return false;
	print_json(res, false);
	json_object_put(res);
	return true;
}

/* ---------------------------------------------------------------- tables */

struct table {
	size_t cols, rows, cap;
	char **cells; /* rows * cols, owned */
};

static void table_init(struct table *t, size_t cols)
{
	memset(t, 0, sizeof(*t));
	t->cols = cols;
}

/* Adds one row; takes ownership of the cols heap strings (NULL: empty). */
static void table_row(struct table *t, ...)
{
	va_list ap;

	if (t->rows == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 16;
		char **n = realloc(t->cells, cap * t->cols * sizeof(*n));

		if (!n)
			oom();
		t->cells = n;
		t->cap = cap;
	}
	va_start(ap, t);
	for (size_t c = 0; c < t->cols; c++) {
		char *s = va_arg(ap, char *);

		t->cells[t->rows * t->cols + c] = s ? s : xstrdup("");
	}
	va_end(ap);
	t->rows++;
}

static void table_print(struct table *t, const char *indent)
{
	size_t *w = xcalloc(t->cols, sizeof(*w));

	for (size_t r = 0; r < t->rows; r++) {
		size_t last = t->cols;

		while (last > 1 && !t->cells[r * t->cols + last - 1][0])
			last--;
		/* a row's last printed cell needs no alignment: a long note
		 * ("not counted (...)") must not widen its column for the rest */
		for (size_t c = 0; c + 1 < last; c++) {
			size_t n = strlen(t->cells[r * t->cols + c]);

			if (n > w[c])
				w[c] = n;
		}
	}
	for (size_t r = 0; r < t->rows; r++) {
		/* trailing empty cells print nothing, not blanks */
		size_t last = t->cols;

		while (last > 1 && !t->cells[r * t->cols + last - 1][0])
			last--;
		fputs(indent, stdout);
		for (size_t c = 0; c < last; c++) {
			const char *s = t->cells[r * t->cols + c];

			if (c + 1 < last)
				printf("%-*s  ", (int)w[c], s);
			else
				printf("%s\n", s);
		}
	}
	free(w);
	for (size_t i = 0; i < t->rows * t->cols; i++)
		free(t->cells[i]);
	free(t->cells);
	memset(t, 0, sizeof(*t));
}

/* -------------------------------------------------------------- requests */

static uint64_t deadline(const struct ctl *x)
{
	return x->timeout_usec ? vpmu_client_now_usec() + x->timeout_usec : 0;
}

static int connect_daemon(struct ctl *x)
{
	struct vpmu_client_error e;
	int r = vpmu_client_connect(x->socket, CLIENT_NAME, deadline(x), &x->c, &e);

	if (r == 0)
		return 0;
	if (r == -EREMOTEIO)
		fprintf(stderr, "vpmuctl: vpmud at %s refused the connection: %s: %s\n", x->socket, e.code,
			e.message);
	else if (r == -ENOENT || r == -ECONNREFUSED)
		fprintf(stderr, "vpmuctl: %s (is vpmud running? use --socket or $%s for another socket)\n",
			e.message, VPMU_CLIENT_SOCKET_ENV);
	else if (r == -EACCES || r == -EPERM)
		fprintf(stderr, "vpmuctl: %s (vpmud's socket is for root and group vpmu)\n", e.message);
	else
		fprintf(stderr, "vpmuctl: cannot talk to vpmud at %s: %s\n", x->socket, e.message);
	return EXIT_CONNECT;
}

/* Calls method with params (borrowed, may be NULL). 0 and *res, or an exit code. */
static int call(struct ctl *x, const char *method, struct json_object *params, struct json_object **res)
{
	struct vpmu_client_error e;
	int r;

	if (!x->c && (r = connect_daemon(x)) != 0)
		return r;
	r = vpmu_client_call(x->c, method, params, deadline(x), res, &e);
	return r < 0 ? call_failed(r, &e) : 0;
}

/* Encodes req with proto's encoder (the same wire form the daemon
 * decodes) and returns its params; 'omit' lists members the user did not
 * give, so the daemon applies its own configured defaults. */
static struct json_object *req_params(const struct proto_request *req, const char *const *omit)
{
	struct json_object *p = proto_request_encode_params(req, omit);

	if (!p)
		oom(); /* every request here was validated; only allocation can fail */
	return p;
}

static struct json_object *name_params(const char *name)
{
	struct json_object *p = json_object_new_object();

	if (!p || !json_fields_put(p, "name", json_object_new_string(name)))
		oom();
	return p;
}

/* ------------------------------------------------------------ formatting */

static char *fmt_duration(int64_t s)
{
	if (s < 60)
		return xasprintf("%" PRId64 "s", s);
	if (s < 3600)
		return xasprintf("%" PRId64 "m %02" PRId64 "s", s / 60, s % 60);
	if (s < 86400)
		return xasprintf("%" PRId64 "h %02" PRId64 "m", s / 3600, s % 3600 / 60);
	return xasprintf("%" PRId64 "d %02" PRId64 "h", s / 86400, s % 86400 / 3600);
}

/* One letter per counter: the plan's route strings fit a terminal even for
 * 32 general-purpose counters. */
static const struct {
	const char *route;
	char letter;
} route_letters[] = {
	{ "passthrough", 'P' }, { "multiplexed", 'M' }, { "reserved", 'R' }, { "at-risk", 'A' },
	{ "mediated", 'W' },    { "none", 'N' },        { "disabled", '-' },
};

static char route_letter(const char *route)
{
	for (size_t i = 0; route && i < sizeof(route_letters) / sizeof(route_letters[0]); i++)
		if (!strcmp(route, route_letters[i].route))
			return route_letters[i].letter;
	return '?';
}

static char *fmt_routes(struct json_object *arr)
{
	size_t n = arr_len(arr);
	char *s;

	if (!n)
		return xstrdup("none");
	s = xcalloc(n * 2, 1);
	for (size_t i = 0; i < n; i++) {
		struct json_object *v = json_object_array_get_idx(arr, i);

		s[2 * i] = route_letter(json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL);
		s[2 * i + 1] = i + 1 < n ? ' ' : 0;
	}
	return s;
}

/* The letters of the routes a flavour has (an older daemon names none:
 * the extension's). */
static char *route_legend(struct json_object *res)
{
	const char *flavour = get_str(res, "flavour"), *routes = get_str(res, "routes");
	const char *letters = !flavour || !strcmp(flavour, "extension") ? "P passthrough, M multiplexed"
			      : !strcmp(flavour, "perf-based")
				      ? "R reserved (room kept, perf places the event), A at-risk (counts may stop)"
			      : !strcmp(flavour, "mediated") ? "W mediated (whole PMU while the vCPU runs)"
			      : !strcmp(flavour, "none")     ? "N none (no PMU)"
							     : "";
	return xasprintf("routes%s%s%s%s%s: %s%s- disabled, ? unknown", flavour ? " (vPMU " : "", flavour ? flavour : "",
			 routes ? ", " : "", routes ? routes : "", flavour ? ")" : "", letters, letters[0] ? ", " : "");
}

/* "vPMU perf-based, routes advisory", or NULL from an older daemon. */
static char *flavour_line(struct json_object *res)
{
	const char *flavour = get_str(res, "flavour"), *routes = get_str(res, "routes");

	if (!flavour)
		return NULL;
	return xasprintf("vPMU %s, routes %s", flavour, routes ? routes : "?");
}

/* "advisory (the VMM handed no route fd)": whether one VM's routes reach
 * the kernel, and why not; NULL from a daemon that does not say per VM. */
static char *vm_routes_text(struct json_object *vm)
{
	const char *routes = get_str(vm, "routes"), *why = get_str(vm, "routes_why");

	if (!routes)
		return NULL;
	return why && *why ? xasprintf("%s (%s)", routes, why) : xstrdup(routes);
}

static void print_vcpu_routes(struct json_object *vcpus, const char *indent)
{
	struct table t;

	table_init(&t, 4);
	table_row(&t, xstrdup("VCPU"), xstrdup("CPUS"), xstrdup("GP"), xstrdup("FIXED"));
	for (size_t i = 0; i < arr_len(vcpus); i++) {
		struct json_object *v = json_object_array_get_idx(vcpus, i);

		table_row(&t, fmt_any(v, "vcpu"), fmt_any(v, "cpus"), fmt_routes(get_arr(v, "gp")),
			  fmt_routes(get_arr(v, "fixed")));
	}
	table_print(&t, indent);
}

static char *fmt_share(struct json_object *o)
{
	double share;

	return get_num(o, "share", &share) ? xasprintf("%.2f", share) : xstrdup("-");
}

static void print_event_placements(struct json_object *events, const char *indent)
{
	struct table t;
	bool reasons = false;

	for (size_t i = 0; i < arr_len(events); i++)
		reasons = reasons || get_str(json_object_array_get_idx(events, i), "reason");
	table_init(&t, reasons ? 4 : 3);
	table_row(&t, xstrdup("EVENT"), xstrdup("PLACEMENT"), xstrdup("SHARE"), reasons ? xstrdup("WHY") : NULL);
	for (size_t i = 0; i < arr_len(events); i++) {
		struct json_object *e = json_object_array_get_idx(events, i);
		const char *why = get_str(e, "reason");

		table_row(&t, fmt_any(e, "event"), fmt_any(e, "placement"), fmt_share(e),
			  reasons ? xstrdup(why ? why : "") : NULL);
	}
	table_print(&t, indent);
}

/* "prof:cycles@gp4", "foreign nmi_watchdog:cycles@fixed1", share when partial */
static char *fmt_host_entry(struct json_object *h)
{
	const char *sess = get_str(h, "session"), *ev = get_str(h, "event"), *ctr = get_str(h, "counter");
	struct json_object *foreign = get(h, "foreign");
	char *owner, *s;
	double share = 1.0;
	bool partial = get_num(h, "share", &share) && share < 0.995;

	if (sess)
		owner = xstrdup(sess);
	else if (foreign)
		owner = xasprintf("foreign %s", json_object_is_type(foreign, json_type_string)
							? json_object_get_string(foreign)
							: json_object_to_json_string_ext(foreign, JSON_C_TO_STRING_PLAIN));
	else
		owner = xstrdup("?");
	if (!ev)
		ev = get(h, "withheld") ? "withheld" : "?";
	s = partial ? xasprintf("%s:%s@%s(%.2f)", owner, ev, ctr ? ctr : "mux", share)
		    : xasprintf("%s:%s@%s", owner, ev, ctr ? ctr : "mux");
	free(owner);
	return s;
}

static char *fmt_host(struct json_object *cpu)
{
	struct json_object *host = get_arr(cpu, "host");
	size_t n = arr_len(host);
	char *out = NULL;

	if (!n)
		return xstrdup("-");
	for (size_t i = 0; i < n; i++) {
		char *e = fmt_host_entry(json_object_array_get_idx(host, i));
		char *next = xasprintf("%s%s%s", out ? out : "", out ? " " : "", e);

		free(out);
		free(e);
		out = next;
	}
	return out;
}

/* ---------------------------------------------------------------- status */

/* "3 (1 simulated, 2 advisory)": the VMs, by whether their routes reach
 * the kernel; the count alone from a daemon that does not say. */
static char *fmt_vms(struct json_object *res)
{
	static const char *const kinds[] = { "enforced", "simulated", "advisory" };
	struct json_object *by = get(res, "vms_by_routes");
	char *counts = NULL, *count = fmt_any(res, "vms"), *out;

	for (size_t i = 0; by && i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		int64_t n;

		if (!get_i64(by, kinds[i], &n) || n == 0)
			continue;
		char *next = xasprintf("%s%s%" PRId64 " %s", counts ? counts : "", counts ? ", " : "", n, kinds[i]);

		free(counts);
		counts = next;
	}
	if (!counts)
		return count;
	out = xasprintf("%s (%s)", count, counts);
	free(count);
	free(counts);
	return out;
}

static int cmd_status(struct ctl *x, int argc, char **argv)
{
	struct json_object *res, *b;
	const char *pos[1];
	size_t npos;
	int64_t v;
	bool flag;
	int r = parse_opts(x, argc, argv, NULL, 0, pos, 0, &npos);

	if (r || (r = call(x, "status", NULL, &res)))
		return r;
	if (printed_as_json(x, res))
		return 0;
	struct table t;

	table_init(&t, 2);
	b = get(res, "backends");
	table_row(&t, xstrdup("server"),
		  get_i64(res, "protocol", &v) ? xasprintf("%s (protocol %" PRId64 ")", get_str(res, "server") ?: "?", v)
					       : fmt_any(res, "server"));
	{
		const char *pmu = get_str(b, "pmu"), *src = get_str(b, "pmu_source");
		bool sim = get_bool(b, "pmu_simulated", &flag) && flag;
		bool known = get_bool(b, "pmu_simulated", &flag);

		table_row(&t, xstrdup("pmu"),
			  xasprintf("%s%s%s%s%s", pmu ? pmu : "?", src ? " (source: " : "", src ? src : "",
				    src ? ")" : "",
				    sim ? "  SIMULATED: nothing is counted by hardware; readings are not measurements"
				    : known ? "" : "  (daemon did not say whether it is simulated)"));
	}
	{
		const char *kvm = get_str(b, "kvm"), *why = get_str(b, "kvm_why");
		bool has = get_bool(b, "kvm_enforced", &flag);
		bool enforced = has && flag;
		/* an old daemon reports only the backend name; "advisory" is its
		 * spelling of "not enforced" */
		bool advisory = (has && !flag) || (!has && kvm && !strcmp(kvm, "advisory"));

		bool model = kvm && !strcmp(kvm, "model");
		const char *label = enforced ? "  (enforced by the kernel)"
				    : model ? "  SIMULATED: routes go to an in-process model of the kernel, not to real guests"
				    : advisory ? "  ADVISORY: guest counter routes are not enforced" : "";

		table_row(&t, xstrdup("kvm"),
			  xasprintf("%s%s%s%s", kvm ? kvm : "?", label,
				    advisory && !model && why ? ": " : "", advisory && !model && why ? why : ""));
		const char *flavour = get_str(b, "kvm_flavour"), *effect = get_str(b, "kvm_flavour_effect");
		const char *routes = get_str(b, "kvm_routes");
		if (flavour)
			table_row(&t, xstrdup("vpmu"), xasprintf("%s (routes %s)%s%s", flavour, routes ? routes : "?",
								 effect ? ": " : "", effect ? effect : ""));
		const char *reservation = get_str(b, "kvm_reservation");
		if (reservation)
			table_row(&t, xstrdup("reservation"),
				  xasprintf("%s%s", reservation,
					    !strcmp(reservation, "uniform") ? " (one mask for every CPU: the kernel takes no other)"
									    : ""));
		struct json_object *warnings = get_arr(b, "kvm_warnings");
		for (size_t i = 0; i < arr_len(warnings); i++) {
			struct json_object *w = json_object_array_get_idx(warnings, i);
			table_row(&t, xstrdup("WARNING"), xstrdup(json_object_is_type(w, json_type_string)
									   ? json_object_get_string(w) : "?"));
		}
		const char *host = get_str(b, "kvm_host");
		if (host)
			table_row(&t, xstrdup("host kvm"), xstrdup(host));
	}
	table_row(&t, xstrdup("generation"), fmt_any(res, "generation"));
	table_row(&t, xstrdup("cpus"), fmt_any(res, "cpus"));
	table_row(&t, xstrdup("vms"), fmt_vms(res));
	{
		/* every advisory VM by name: no output leaves one unsaid */
		struct json_object *adv = get_arr(res, "advisory_vms");
		size_t n = arr_len(adv), shown = n > 20 ? 20 : n;
		char *names = NULL;

		for (size_t i = 0; i < shown; i++) {
			struct json_object *v = json_object_array_get_idx(adv, i);
			char *next = xasprintf("%s%s%s", names ? names : "", names ? ", " : "",
					       json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "?");

			free(names);
			names = next;
		}
		char more[48] = "";

		if (n > shown)
			snprintf(more, sizeof(more), " and %zu more", n - shown);
		if (n)
			table_row(&t, xstrdup("advisory vms"),
				  xasprintf("%s%s: routes not enforced (vm show NAME says why)", names, more));
		free(names);
	}
	table_row(&t, xstrdup("sessions"), fmt_any(res, "sessions"));
	table_row(&t, xstrdup("watchers"), fmt_any(res, "watchers"));
	if (get_i64(res, "uptime_s", &v))
		table_row(&t, xstrdup("uptime"), fmt_duration(v));
	table_print(&t, "");
	json_object_put(res);
	return 0;
}

/* --------------------------------------------------------------- metrics */

/* The text vpmud writes to its metrics file, as this caller may see it
 * (docs/metrics.md): printed as it comes, for promtool or a pipe. */
static int cmd_metrics(struct ctl *x, int argc, char **argv)
{
	struct json_object *res;
	const char *pos[1];
	size_t npos;
	int r = parse_opts(x, argc, argv, NULL, 0, pos, 0, &npos);

	if (r || (r = call(x, "metrics", NULL, &res)))
		return r;
	if (printed_as_json(x, res))
		return 0;
	const char *text = get_str(res, "text");

	if (!text) {
		fprintf(stderr, "vpmuctl: vpmud's answer to metrics has no text\n");
		json_object_put(res);
		return EXIT_DAEMON;
	}
	fputs(text, stdout);
	json_object_put(res);
	return 0;
}

/* ------------------------------------------------------------------- pmu */

static int cmd_pmu(struct ctl *x, int argc, char **argv)
{
	struct json_object *res;
	const char *pos[1];
	size_t npos;
	int r = parse_opts(x, argc, argv, NULL, 0, pos, 0, &npos);

	if (r || (r = call(x, "pmu", NULL, &res)))
		return r;
	if (printed_as_json(x, res))
		return 0;
	static const char *const keys[] = { "source", "model", "vendor", "version", "gp", "fixed", "gp_width", "cpus" };
	struct table t;

	table_init(&t, 2);
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (get(res, keys[i]))
			table_row(&t, xstrdup(keys[i]), fmt_any(res, keys[i]));
	{
		struct json_object *taken = get(res, "taken");

		if (taken && json_object_is_type(taken, json_type_object)) {
			bool first = true;

			json_object_object_foreach(taken, who, what) {
				/* vpmud describes each holder in words (a string);
				 * docs/protocol.md shows {"counter", "cpus"} */
				if (json_object_is_type(what, json_type_string))
					table_row(&t, xstrdup(first ? "taken" : ""),
						  xasprintf("%s: %s", who, json_object_get_string(what)));
				else
					table_row(&t, xstrdup(first ? "taken" : ""),
						  xasprintf("%s: counter %s on CPUs %s", who,
							    get_str(what, "counter") ?: "?", get_str(what, "cpus") ?: "?"));
				first = false;
			}
			if (first)
				table_row(&t, xstrdup("taken"), xstrdup("none"));
		}
	}
	table_print(&t, "");
	json_object_put(res);
	return 0;
}

/* ------------------------------------------------------------------ plan */

static int cmd_plan(struct ctl *x, int argc, char **argv)
{
	struct opt o[] = { { "cpus", true, false, NULL } };
	struct proto_request req = { .method = PROTO_M_PLAN };
	struct json_object *res, *params;
	const char *pos[1];
	size_t npos;
	int r = parse_opts(x, argc, argv, o, 1, pos, 0, &npos);

	if (r)
		return r;
	if (o[0].seen) {
		if ((r = parse_cpus(x, "--cpus", o[0].val, &req.u.plan.cpus)))
			return r;
		req.u.plan.has_cpus = true;
	}
	params = req_params(&req, NULL);
	r = call(x, "plan", params, &res);
	json_object_put(params);
	if (r)
		return r;
	if (printed_as_json(x, res))
		return 0;
	int64_t gen;

	if (get_i64(res, "generation", &gen)) {
		char *fl = flavour_line(res);

		printf("generation %" PRId64 "%s%s%s\n", gen, fl ? " (" : "", fl ? fl : "", fl ? ")" : "");
		free(fl);
	}

	/* CPUs with identical rows are merged into ranges: a 256-CPU host
	 * with one session is four lines, not 256 */
	struct json_object *cpus = get_arr(res, "cpus");
	struct table t;
	size_t n = arr_len(cpus);

	printf("\nCPUs (guest partition masks and host placements; host: session:event@counter)\n");
	table_init(&t, 4);
	table_row(&t, xstrdup("CPU"), xstrdup("GUEST GP"), xstrdup("GUEST FIXED"), xstrdup("HOST"));
	for (size_t i = 0; i < n;) {
		struct json_object *c = json_object_array_get_idx(cpus, i);
		char *gp = fmt_any(c, "guest_gp_mask"), *fx = fmt_any(c, "guest_fixed_mask"), *host = fmt_host(c);
		struct cpulist set;
		int64_t cpu = -1;
		size_t j = i + 1;

		cpulist_clear(&set);
		if (!get_i64(c, "cpu", &cpu) || cpu < 0 || cpu >= CPULIST_MAX_CPUS)
			cpu = -1;
		else
			cpulist_set(&set, (unsigned)cpu);
		for (; cpu >= 0 && j < n; j++) {
			struct json_object *d = json_object_array_get_idx(cpus, j);
			char *gp2 = fmt_any(d, "guest_gp_mask"), *fx2 = fmt_any(d, "guest_fixed_mask"),
			     *host2 = fmt_host(d);
			int64_t c2 = -1;
			bool same = !strcmp(gp, gp2) && !strcmp(fx, fx2) && !strcmp(host, host2) &&
				    get_i64(d, "cpu", &c2) && c2 == cpu + (int64_t)(j - i);

			free(gp2), free(fx2), free(host2);
			if (!same)
				break;
			cpulist_set(&set, (unsigned)c2);
		}
		char buf[64]; /* consecutive CPUs: one range, "4094-4095" at most */

		if (cpulist_empty(&set) || cpulist_format(&set, buf, sizeof(buf)) < 0)
			snprintf(buf, sizeof(buf), "?");
		table_row(&t, xstrdup(buf), gp, fx, host);
		i = j;
	}
	table_print(&t, "");

	struct json_object *vms = get_arr(res, "vms");
	char *legend = route_legend(res);

	printf("\nVMs (%s)\n", legend);
	free(legend);
	if (!arr_len(vms))
		printf("  none\n");
	for (size_t i = 0; i < arr_len(vms); i++) {
		struct json_object *vm = json_object_array_get_idx(vms, i);
		char *routes = vm_routes_text(vm);

		printf("  %s%s%s%s\n", get_str(vm, "name") ?: "?", routes ? " (routes " : "", routes ? routes : "",
		       routes ? ")" : "");
		free(routes);
		print_vcpu_routes(get_arr(vm, "vcpus"), "    ");
	}

	struct json_object *sessions = get_arr(res, "sessions");

	printf("\nSessions\n");
	if (!arr_len(sessions))
		printf("  none\n");
	for (size_t i = 0; i < arr_len(sessions); i++) {
		struct json_object *s = json_object_array_get_idx(sessions, i);

		printf("  %s\n", get_str(s, "name") ?: "?");
		if (get(s, "withheld"))
			printf("    events withheld (another user's session)\n");
		else
			print_event_placements(get_arr(s, "events"), "    ");
	}
	json_object_put(res);
	return 0;
}

/* -------------------------------------------------------------------- vm */

/* Options shared by attach and update. */
enum { VO_PRIORITY, VO_CLASS, VO_GP, VO_FIXED, VO_VCPUS, VO_CPUS, VO_VCPU_CPUS, VO_PID, VO_VM_FD, VO__COUNT };

static void vm_opts(struct opt o[VO__COUNT])
{
	static const char *const names[VO__COUNT] = { "priority", "class", "gp", "fixed", "vcpus",
						      "cpus", "vcpu-cpus", "pid", "vm-fd" };

	for (int i = 0; i < VO__COUNT; i++)
		o[i] = (struct opt){ names[i], true, false, NULL };
}

/* --vcpus N --cpus LIST, or --vcpu-cpus "LIST;LIST;...". 0 when neither. */
static int parse_vcpus(const struct ctl *x, struct opt *o, struct proto_vcpus *out, bool *given)
{
	int r;

	*given = false;
	if (o[VO_VCPU_CPUS].seen && (o[VO_VCPUS].seen || o[VO_CPUS].seen))
		return usage_error(x, "give either --vcpu-cpus or --vcpus with --cpus, not both");
	if (o[VO_VCPU_CPUS].seen) {
		const char *s = o[VO_VCPU_CPUS].val;
		uint32_t n = 1;

		for (const char *p = s; *p; p++)
			n += *p == ';';
		if (n > PROTO_MAX_VCPUS)
			return usage_error(x, "--vcpu-cpus: at most %d vCPUs, got %u", PROTO_MAX_VCPUS, n);
		out->cpus = xcalloc(n, sizeof(*out->cpus));
		out->count = n;
		for (uint32_t i = 0; i < n; i++) {
			const char *end = strchr(s, ';');
			size_t len = end ? (size_t)(end - s) : strlen(s);
			char *item = strndup(s, len);
			char what[48];

			if (!item)
				oom();
			snprintf(what, sizeof(what), "--vcpu-cpus (vCPU %u)", i);
			r = parse_cpus(x, what, item, &out->cpus[i]);
			free(item);
			if (r)
				return r;
			s = end ? end + 1 : s + len;
		}
		*given = true;
		return 0;
	}
	if (o[VO_VCPUS].seen != o[VO_CPUS].seen)
		return usage_error(x, "%s needs %s", o[VO_VCPUS].seen ? "--vcpus" : "--cpus",
				   o[VO_VCPUS].seen ? "--cpus LIST" : "--vcpus N");
	if (!o[VO_VCPUS].seen)
		return 0;
	uint32_t n = 0;
	struct cpulist set;

	if ((r = parse_u32(x, "--vcpus", o[VO_VCPUS].val, 1, PROTO_MAX_VCPUS, &n)) ||
	    (r = parse_cpus(x, "--cpus", o[VO_CPUS].val, &set)))
		return r;
	out->cpus = xcalloc(n, sizeof(*out->cpus));
	out->count = n;
	for (uint32_t i = 0; i < n; i++)
		out->cpus[i] = set;
	*given = true;
	return 0;
}

/* priority, class, gp, fixed: fills the has_* flags the caller passes */
static int parse_shape(const struct ctl *x, struct opt *o, uint32_t *prio, enum proto_class *cls, uint32_t *gp,
		       uint32_t *fixed)
{
	int r = 0;

	if (o[VO_PRIORITY].seen && (r = parse_u32(x, "--priority", o[VO_PRIORITY].val, 0, PROTO_MAX_PRIORITY, prio)))
		return r;
	if (o[VO_CLASS].seen && (r = parse_class(x, o[VO_CLASS].val, cls)))
		return r;
	if (o[VO_GP].seen && (r = parse_u32(x, "--gp", o[VO_GP].val, 0, PROTO_MAX_GP, gp)))
		return r;
	if (o[VO_FIXED].seen && (r = parse_fixed(x, o[VO_FIXED].val, fixed)))
		return r;
	return 0;
}

static int print_generation_line(const char *what, const char *name, struct json_object *res)
{
	int64_t gen;

	if (get_i64(res, "generation", &gen))
		printf("%s %s (generation %" PRId64 ")\n", what, name, gen);
	else
		printf("%s %s\n", what, name);
	return 0;
}

static int do_bind(struct ctl *x, const char *name, int32_t pid, bool has_fd, int32_t fd,
		   struct json_object **res)
{
	struct proto_request req = { .method = PROTO_M_VM_BIND };
	struct json_object *params;
	int r;

	snprintf(req.u.vm_bind.name, sizeof(req.u.vm_bind.name), "%s", name);
	req.u.vm_bind.pid = pid;
	req.u.vm_bind.has_vm_fd = has_fd;
	req.u.vm_bind.vm_fd = fd;
	params = req_params(&req, NULL);
	r = call(x, "vm.bind", params, res);
	json_object_put(params);
	return r;
}

static int parse_owner(const struct ctl *x, struct opt *o, int32_t *pid, int32_t *fd)
{
	uint32_t v = 0;
	int r;

	if (o[VO_VM_FD].seen && !o[VO_PID].seen)
		return usage_error(x, "--vm-fd needs --pid (the process that holds the fd)");
	if (o[VO_PID].seen) {
		if ((r = parse_u32(x, "--pid", o[VO_PID].val, 1, PROTO_MAX_PID, &v)))
			return r;
		*pid = (int32_t)v;
	}
	if (o[VO_VM_FD].seen) {
		if ((r = parse_u32(x, "--vm-fd", o[VO_VM_FD].val, 0, INT32_MAX, &v)))
			return r;
		*fd = (int32_t)v;
	}
	return 0;
}

static int vm_attach(struct ctl *x, int argc, char **argv)
{
	struct opt o[VO__COUNT];
	_cleanup_(proto_request_fini) struct proto_request req = { .method = PROTO_M_VM_ATTACH };
	struct proto_vm_attach *a = &req.u.vm_attach;
	const char *pos[1], *omit[3] = { NULL, NULL, NULL };
	_cleanup_json_ struct json_object *params = NULL, *res = NULL, *bres = NULL;
	size_t npos, no = 0;
	int32_t pid = 0, fd = 0;
	bool given;
	int r;

	vm_opts(o);
	a->priority = PROTO_DEFAULT_PRIORITY;
	a->cls = PROTO_CLASS_PREFERRED;
	if ((r = parse_opts(x, argc, argv, o, VO__COUNT, pos, 1, &npos)))
		return r;
	if (npos != 1)
		return usage_error(x, "needs the VM name");
	if ((r = check_name(x, "VM name", pos[0])) ||
	    (r = parse_shape(x, o, &a->priority, &a->cls, &a->gp, &a->fixed_mask)) ||
	    (r = parse_owner(x, o, &pid, &fd)) || (r = parse_vcpus(x, o, &a->vcpus, &given)))
		return r;
	if (!given)
		return usage_error(x, "needs the vCPUs: --vcpus N --cpus LIST, or --vcpu-cpus LIST;LIST;...");
	snprintf(a->name, sizeof(a->name), "%s", pos[0]);
	/* an owner needs its VM fd on the wire; without --vm-fd the lease is
	 * attached first and bound in a second request, where the daemon
	 * finds the fd itself */
	if (o[VO_PID].seen && o[VO_VM_FD].seen) {
		a->has_owner = true;
		a->owner.pid = pid;
		a->owner.vm_fd = fd;
	}
	/* the daemon's configured defaults apply to what was not given */
	if (!o[VO_PRIORITY].seen)
		omit[no++] = "priority";
	if (!o[VO_CLASS].seen)
		omit[no++] = "class";
	params = req_params(&req, omit);
	if ((r = call(x, "vm.attach", params, &res)))
		return r;
	if (o[VO_PID].seen && !o[VO_VM_FD].seen) {
		r = do_bind(x, a->name, pid, false, 0, &bres);
		if (r) {
			/* do not leave a lease that nothing will ever release */
			_cleanup_json_ struct json_object *dp = name_params(a->name), *dres = NULL;

			fprintf(stderr, "vpmuctl: vm attach: could not bind %s to pid %d; detaching it again\n",
				a->name, (int)pid);
			/* The bind may have broken the connection (a timeout, a
			 * reset): the detach gets a fresh one. */
			vpmu_client_close(x->c);
			x->c = NULL;
			call(x, "vm.detach", dp, &dres);
			return r;
		}
	}
	if (x->json) {
		print_json(res, false);
		if (bres)
			print_json(bres, false);
	} else {
		struct json_object *g = get(res, "granted");
		char *fl = flavour_line(res);

		const char *why = get_str(res, "routes_why");

		print_generation_line("attached", a->name, res);
		if (fl)
			printf("  %s%s%s%s\n", fl, why ? " (" : "", why ? why : "", why ? ")" : "");
		free(fl);
		/* "<route>_vcpus": the vCPUs that asked for PMCs, by the weakest
		 * route they got; the flavour decides which routes there are */
		int64_t pv = 0, mv = 0;

		/* "|", not "||": both counts are read */
		if (g && ((int)get_i64(g, "passthrough_vcpus", &pv) | (int)get_i64(g, "multiplexed_vcpus", &mv))) {
			printf("  %" PRId64 " vCPU(s) with counters passed through, %" PRId64 " multiplexed\n", pv, mv);
		} else if (g && json_object_is_type(g, json_type_object)) {
			json_object_object_foreach(g, key, val) {
				size_t kl = strlen(key);
				int64_t n;

				(void)val;
				if (kl <= 6 || strcmp(key + kl - 6, "_vcpus") || !get_i64(g, key, &n))
					continue;
				char *route = xasprintf("%.*s", (int)(kl - 6), key);

				for (char *c = route; *c; c++)
					*c = *c == '_' ? '-' : *c;
				printf("  %" PRId64 " vCPU(s) %s\n", n, route);
				free(route);
			}
		}
		if (o[VO_PID].seen)
			printf("  bound to pid %d\n", (int)pid);
	}
	return 0;
}

static int vm_update(struct ctl *x, int argc, char **argv)
{
	struct opt o[VO__COUNT];
	_cleanup_(proto_request_fini) struct proto_request req = { .method = PROTO_M_VM_UPDATE };
	struct proto_vm_update *u = &req.u.vm_update;
	_cleanup_json_ struct json_object *params = NULL, *res = NULL;
	const char *pos[1];
	size_t npos;
	int r;

	vm_opts(o);
	if ((r = parse_opts(x, argc, argv, o, VO__COUNT, pos, 1, &npos)))
		return r;
	if (npos != 1)
		return usage_error(x, "needs the VM name");
	if (o[VO_PID].seen || o[VO_VM_FD].seen)
		return usage_error(x, "the owner of a VM cannot change; use 'vm bind' for a VM attached without one");
	if ((r = check_name(x, "VM name", pos[0])) ||
	    (r = parse_shape(x, o, &u->priority, &u->cls, &u->gp, &u->fixed_mask)) ||
	    (r = parse_vcpus(x, o, &u->vcpus, &u->has_vcpus)))
		return r;
	u->has_priority = o[VO_PRIORITY].seen;
	u->has_class = o[VO_CLASS].seen;
	u->has_gp = o[VO_GP].seen;
	u->has_fixed_mask = o[VO_FIXED].seen;
	if (!u->has_priority && !u->has_class && !u->has_gp && !u->has_fixed_mask && !u->has_vcpus)
		return usage_error(x, "nothing to update: give --priority, --class, --gp, --fixed, or the vCPUs");
	snprintf(u->name, sizeof(u->name), "%s", pos[0]);
	params = req_params(&req, NULL);
	if ((r = call(x, "vm.update", params, &res)))
		return r;
	if (x->json)
		print_json(res, false);
	else
		print_generation_line("updated", u->name, res);
	return 0;
}

/* vm.bind handing this process's descriptor route_fd as the VM's route
 * fd (a VMM's launcher that holds it, docs/vmm-integration.md). */
static int bind_route_fd(struct ctl *x, const char *name, int32_t pid, int route_fd, struct json_object **res)
{
	struct vpmu_client_error e;
	int r;

	if (!x->c && (r = connect_daemon(x)) != 0)
		return r;
	r = vpmu_client_vm_bind_route_fd(x->c, name, pid, route_fd, deadline(x), res, &e);
	if (r == -EBADF) {
		fprintf(stderr, "vpmuctl: --route-fd %d: not an open descriptor of vpmuctl (start it with the "
				"route fd open on that number)\n", route_fd);
		return 1;
	}
	return r < 0 ? call_failed(r, &e) : 0;
}

static int vm_bind(struct ctl *x, int argc, char **argv)
{
	struct opt o[VO__COUNT];
	struct json_object *res = NULL;
	const char *pos[1];
	size_t npos;
	int32_t pid = 0, fd = 0;
	uint32_t route_fd = 0;
	int r;

	vm_opts(o);
	/* only --pid, --vm-fd and --route-fd apply; the rest are refused by name */
	struct opt bo[3] = { o[VO_PID], o[VO_VM_FD], { "route-fd", true, false, NULL } };
	if ((r = parse_opts(x, argc, argv, bo, 3, pos, 1, &npos)))
		return r;
	o[VO_PID] = bo[0];
	o[VO_VM_FD] = bo[1];
	if (npos != 1)
		return usage_error(x, "needs the VM name");
	if (!o[VO_PID].seen)
		return usage_error(x, "needs --pid PID (the VMM process, e.g. QEMU)");
	if (bo[2].seen && o[VO_VM_FD].seen)
		return usage_error(x, "--route-fd names the VM itself; --vm-fd goes without it");
	if ((r = check_name(x, "VM name", pos[0])) || (r = parse_owner(x, o, &pid, &fd)))
		return r;
	if (bo[2].seen && (r = parse_u32(x, "--route-fd", bo[2].val, 0, INT32_MAX, &route_fd)))
		return r;
	if (bo[2].seen)
		r = bind_route_fd(x, pos[0], pid, (int)route_fd, &res);
	else
		r = do_bind(x, pos[0], pid, o[VO_VM_FD].seen, fd, &res);
	if (r)
		return r;
	if (x->json) {
		print_json(res, false);
	} else {
		char what[64];

		snprintf(what, sizeof(what), "bound to pid %d:", (int)pid);
		print_generation_line(what, pos[0], res);
		char *routes = vm_routes_text(res);

		if (routes)
			printf("  routes: %s\n", routes);
		free(routes);
	}
	json_object_put(res);
	return 0;
}

/* detach, show and the session twins: one NAME, no options */
static int name_only(struct ctl *x, int argc, char **argv, const char *method, struct json_object **res,
		     const char **name)
{
	const char *pos[1];
	size_t npos;
	struct json_object *params;
	int r = parse_opts(x, argc, argv, NULL, 0, pos, 1, &npos);

	if (r)
		return r;
	if (npos != 1)
		return usage_error(x, "needs the %s name", !strncmp(method, "vm.", 3) ? "VM" : "session");
	if ((r = check_name(x, !strncmp(method, "vm.", 3) ? "VM name" : "session name", pos[0])))
		return r;
	params = name_params(pos[0]);
	r = call(x, method, params, res);
	json_object_put(params);
	*name = pos[0];
	return r;
}

static int vm_detach(struct ctl *x, int argc, char **argv)
{
	struct json_object *res;
	const char *name = NULL;
	int r = name_only(x, argc, argv, "vm.detach", &res, &name);

	if (r)
		return r;
	if (x->json)
		print_json(res, false);
	else
		print_generation_line("detached", name, res);
	json_object_put(res);
	return 0;
}

static int vm_show(struct ctl *x, int argc, char **argv)
{
	struct json_object *res, *owner;
	const char *name;
	int r = name_only(x, argc, argv, "vm.show", &res, &name);

	if (r)
		return r;
	if (printed_as_json(x, res))
		return 0;
	struct table t;

	table_init(&t, 2);
	table_row(&t, xstrdup("name"), fmt_any(res, "name"));
	table_row(&t, xstrdup("priority"), fmt_any(res, "priority"));
	table_row(&t, xstrdup("class"), fmt_any(res, "class"));
	table_row(&t, xstrdup("gp"), fmt_any(res, "gp"));
	table_row(&t, xstrdup("fixed_mask"), fmt_any(res, "fixed_mask"));
	owner = get(res, "owner");
	if (get(res, "withheld"))
		table_row(&t, xstrdup("owner"), xstrdup("withheld (another user's VM)"));
	else if (owner && json_object_is_type(owner, json_type_object))
		table_row(&t, xstrdup("owner"),
			  xasprintf("pid %s, VM fd %s", get(owner, "pid") ? json_object_get_string(get(owner, "pid")) : "?",
				    get(owner, "vm_fd") ? json_object_get_string(get(owner, "vm_fd")) : "?"));
	else
		table_row(&t, xstrdup("owner"), xstrdup("none (not bound to a process)"));
	char *routes = vm_routes_text(res);

	if (routes)
		table_row(&t, xstrdup("routes"), routes);
	table_print(&t, "");
	char *legend = route_legend(res);

	printf("vCPUs (%s)\n", legend);
	free(legend);
	print_vcpu_routes(get_arr(res, "vcpus"), "  ");
	json_object_put(res);
	return 0;
}

/* "reserved 1, at-risk 1": the vCPUs that asked for PMCs, by the weakest
 * route they got ("<route>_vcpus"); the extension's views count only
 * those passed through whole. */
static char *fmt_grants(struct json_object *vm, bool extension)
{
	char *out = NULL;

	json_object_object_foreach(vm, key, val) {
		size_t kl = strlen(key);
		int64_t n;

		(void)val;
		if (kl <= 6 || strcmp(key + kl - 6, "_vcpus") || !get_i64(vm, key, &n) ||
		    (!extension && !strcmp(key, "passthrough_vcpus")))
			continue;
		char *route = xasprintf("%.*s", (int)(kl - 6), key);

		for (char *c = route; *c; c++)
			*c = *c == '_' ? '-' : *c;
		char *next = xasprintf("%s%s%s %" PRId64, out ? out : "", out ? ", " : "", route, n);

		free(route);
		free(out);
		out = next;
	}
	return out ? out : xstrdup("-");
}

static int vm_list(struct ctl *x, int argc, char **argv)
{
	const char *pos[1];
	size_t npos;
	struct json_object *res, *vms;
	int r = parse_opts(x, argc, argv, NULL, 0, pos, 0, &npos);

	if (r || (r = call(x, "vm.list", NULL, &res)))
		return r;
	if (printed_as_json(x, res))
		return 0;
	vms = get_arr(res, "vms");
	if (!arr_len(vms)) {
		printf("no VMs\n");
		json_object_put(res);
		return 0;
	}
	struct table t;
	char *fl = flavour_line(res);
	bool extension = !get_str(res, "flavour") || !strcmp(get_str(res, "flavour"), "extension");

	if (fl)
		printf("%s\n", fl);
	free(fl);
	table_init(&t, 6);
	table_row(&t, xstrdup("NAME"), xstrdup("PRIORITY"), xstrdup("CLASS"), xstrdup("VCPUS"), xstrdup("ROUTES"),
		  xstrdup("GRANTED"));
	for (size_t i = 0; i < arr_len(vms); i++) {
		struct json_object *v = json_object_array_get_idx(vms, i);

		/* why is vm show's: a column of sentences does not read */
		table_row(&t, fmt_any(v, "name"), fmt_any(v, "priority"), fmt_any(v, "class"), fmt_any(v, "vcpus"),
			  fmt_any(v, "routes"), fmt_grants(v, extension));
	}
	table_print(&t, "");
	json_object_put(res);
	return 0;
}

/* --------------------------------------------------------------- session */

/* perf's own syntax: events separated by commas, except commas inside a
 * PMU term "cpu/event=0x3c,umask=0x0/u". */
static int split_events(const struct ctl *x, const char *s, struct proto_session_start *out)
{
	size_t cap = PROTO_MAX_EVENTS;

	out->events = xcalloc(cap, sizeof(*out->events));
	while (true) {
		const char *p = s;
		bool in_term = false;

		for (; *p && (in_term || *p != ','); p++)
			if (*p == '/')
				in_term = !in_term;
		size_t len = (size_t)(p - s);

		if (len == 0)
			return usage_error(x, "--events: empty event name in \"%s\"", s);
		if (len > PROTO_EVENT_MAX)
			return usage_error(x, "--events: an event is longer than %d characters", PROTO_EVENT_MAX);
		for (size_t i = 0; i < len; i++)
			if (s[i] < 0x21 || s[i] > 0x7e)
				return usage_error(x, "--events: \"%.*s\": only printable characters without spaces",
						   (int)len, s);
		if (out->n_events == cap)
			return usage_error(x, "--events: at most %d events", PROTO_MAX_EVENTS);
		char *e = strndup(s, len);

		if (!e)
			oom();
		for (uint32_t j = 0; j < out->n_events; j++)
			if (!strcmp(out->events[j], e)) {
				int r = usage_error(x, "--events: \"%s\" is listed twice", e);

				free(e);
				return r;
			}
		out->events[out->n_events++] = e;
		if (!*p)
			return 0;
		s = p + 1;
	}
}

static int session_start(struct ctl *x, int argc, char **argv)
{
	enum { EVENTS, CPUS, PID, PRIORITY, CLASS, OWNER, COUNT_GUEST, N };
	struct opt o[N] = {
		{ "events", true, false, NULL },   { "cpus", true, false, NULL },   { "pid", true, false, NULL },
		{ "priority", true, false, NULL }, { "class", true, false, NULL }, { "owner-pid", true, false, NULL },
		{ "count-guest", false, false, NULL },
	};
	_cleanup_(proto_request_fini) struct proto_request req = { .method = PROTO_M_SESSION_START };
	struct proto_session_start *s = &req.u.session_start;
	const char *pos[1], *omit[3] = { NULL, NULL, NULL };
	_cleanup_json_ struct json_object *params = NULL, *res = NULL;
	size_t npos, no = 0;
	uint32_t v = 0;
	int r;

	s->priority = PROTO_DEFAULT_PRIORITY;
	s->cls = PROTO_CLASS_PREFERRED;
	if ((r = parse_opts(x, argc, argv, o, N, pos, 1, &npos)))
		return r;
	if (npos != 1)
		return usage_error(x, "needs the session name");
	if ((r = check_name(x, "session name", pos[0])))
		return r;
	snprintf(s->name, sizeof(s->name), "%s", pos[0]);
	if (!o[EVENTS].seen)
		return usage_error(x, "needs --events LIST (e.g. cycles,instructions)");
	if (o[CPUS].seen == o[PID].seen)
		return usage_error(x, "give exactly one of --cpus LIST (system-wide on those CPUs) and --pid PID");
	if ((r = split_events(x, o[EVENTS].val, s)))
		return r;
	if (o[CPUS].seen) {
		s->has_cpus = true;
		if ((r = parse_cpus(x, "--cpus", o[CPUS].val, &s->cpus)))
			return r;
	} else {
		if ((r = parse_u32(x, "--pid", o[PID].val, 1, PROTO_MAX_PID, &v)))
			return r;
		s->pid = (int32_t)v;
	}
	if (o[PRIORITY].seen && (r = parse_u32(x, "--priority", o[PRIORITY].val, 0, PROTO_MAX_PRIORITY, &s->priority)))
		return r;
	if (o[CLASS].seen && (r = parse_class(x, o[CLASS].val, &s->cls)))
		return r;
	if (o[OWNER].seen) {
		if ((r = parse_u32(x, "--owner-pid", o[OWNER].val, 1, PROTO_MAX_PID, &v)))
			return r;
		s->owner_pid = (int32_t)v;
	} else {
		/* vpmuctl exits at once; the session should live as long as the
		 * shell (or script) that started it */
		s->owner_pid = (int32_t)getppid();
	}
	s->count_guest = o[COUNT_GUEST].seen;
	if (!o[PRIORITY].seen)
		omit[no++] = "priority";
	if (!o[CLASS].seen)
		omit[no++] = "class";
	params = req_params(&req, omit);
	if ((r = call(x, "session.start", params, &res)))
		return r;
	if (x->json) {
		print_json(res, false);
	} else {
		char *fl = flavour_line(res);
		const char *note = get_str(res, "note");

		print_generation_line("started session", s->name, res);
		printf("  stops when pid %d exits (--owner-pid), or with 'vpmuctl session stop %s'\n",
		       (int)s->owner_pid, s->name);
		if (fl)
			printf("  %s\n", fl);
		free(fl);
		if (note)
			printf("  note: %s\n", note);
		print_event_placements(get_arr(res, "events"), "  ");
	}
	return 0;
}

static int session_stop(struct ctl *x, int argc, char **argv)
{
	struct json_object *res;
	const char *name = NULL;
	int r = name_only(x, argc, argv, "session.stop", &res, &name);

	if (r)
		return r;
	if (x->json)
		print_json(res, false);
	else
		print_generation_line("stopped session", name, res);
	json_object_put(res);
	return 0;
}

static int session_list(struct ctl *x, int argc, char **argv)
{
	const char *pos[1];
	size_t npos;
	struct json_object *res, *ss;
	int r = parse_opts(x, argc, argv, NULL, 0, pos, 0, &npos);

	if (r || (r = call(x, "session.list", NULL, &res)))
		return r;
	if (printed_as_json(x, res))
		return 0;
	ss = get_arr(res, "sessions");
	if (!arr_len(ss)) {
		printf("no sessions\n");
		json_object_put(res);
		return 0;
	}
	struct table t;

	table_init(&t, 5);
	table_row(&t, xstrdup("NAME"), xstrdup("PRIORITY"), xstrdup("CLASS"), xstrdup("EVENTS"), xstrdup("TARGET"));
	for (size_t i = 0; i < arr_len(ss); i++) {
		struct json_object *s = json_object_array_get_idx(ss, i);
		char *target = get(s, "cpus")  ? xasprintf("cpus %s", json_object_get_string(get(s, "cpus")))
			       : get(s, "pid") ? xasprintf("pid %s", json_object_get_string(get(s, "pid")))
					       : xstrdup(get(s, "withheld") ? "withheld" : "-");

		bool withheld = get(s, "withheld") && json_object_get_boolean(get(s, "withheld"));
		table_row(&t, fmt_any(s, "name"), fmt_any(s, "priority"), fmt_any(s, "class"),
			  withheld ? xstrdup("withheld") : fmt_any(s, "events"), target);
	}
	table_print(&t, "");
	json_object_put(res);
	return 0;
}

/* One event of a reading, as numbers (what is absent is marked so). */
struct reading {
	const char *event;
	bool counted;
	const char *reason;
	bool has_value, has_enabled, has_running, has_scaled, has_mux;
	uint64_t value, enabled, running;
	double scaled;
	bool mux;
	const char *placement;
};

static void reading_of(struct json_object *e, struct reading *r)
{
	bool counted = true;

	memset(r, 0, sizeof(*r));
	r->event = get_str(e, "event") ?: "?";
	get_bool(e, "counted", &counted);
	r->counted = counted;
	r->reason = get_str(e, "reason");
	r->has_value = get_u64(e, "value", &r->value);
	r->has_enabled = get_u64(e, "time_enabled", &r->enabled);
	r->has_running = get_u64(e, "time_running", &r->running);
	r->has_scaled = get_num(e, "scaled", &r->scaled);
	r->has_mux = get_bool(e, "multiplexed", &r->mux);
	r->placement = get_str(e, "placement");
	/* an older daemon sends the raw triple only: scale as perf does */
	if (r->counted && !r->has_scaled && r->has_value && r->has_enabled && r->has_running && r->running) {
		r->scaled = (double)r->value * (double)r->enabled / (double)r->running;
		r->has_scaled = true;
	}
	if (r->counted && !r->has_mux && r->has_enabled && r->has_running) {
		r->mux = r->running < r->enabled;
		r->has_mux = true;
	}
}

static char *num_or_dash(bool has, uint64_t v)
{
	return has ? xasprintf("%" PRIu64, v) : xstrdup("-");
}

static char *not_counted(const struct reading *r)
{
	return xasprintf("not counted (%s)", r->reason ? r->reason : "no reason given");
}

static void print_reading(struct json_object *res)
{
	struct json_object *evs = get_arr(res, "events");
	struct table t;

	table_init(&t, 7);
	table_row(&t, xstrdup("EVENT"), xstrdup("VALUE"), xstrdup("ENABLED(ns)"), xstrdup("RUNNING(ns)"),
		  xstrdup("SCALED"), xstrdup("MUX"), xstrdup("PLACEMENT"));
	for (size_t i = 0; i < arr_len(evs); i++) {
		struct reading r;

		reading_of(json_object_array_get_idx(evs, i), &r);
		if (!r.counted) {
			table_row(&t, xstrdup(r.event), not_counted(&r), NULL, NULL, NULL, NULL, NULL);
			continue;
		}
		table_row(&t, xstrdup(r.event), num_or_dash(r.has_value, r.value), num_or_dash(r.has_enabled, r.enabled),
			  num_or_dash(r.has_running, r.running),
			  r.has_scaled ? xasprintf("%.0f", r.scaled) : xstrdup("-"),
			  xstrdup(r.has_mux ? (r.mux ? "yes" : "no") : "-"), xstrdup(r.placement ? r.placement : "-"));
	}
	table_print(&t, "");
	if (get_str(res, "note"))
		printf("note: %s\n", get_str(res, "note"));
}

static struct json_object *find_event(struct json_object *res, const char *name)
{
	struct json_object *evs = get_arr(res, "events");

	for (size_t i = 0; i < arr_len(evs); i++) {
		struct json_object *e = json_object_array_get_idx(evs, i);
		const char *n = get_str(e, "event");

		if (n && !strcmp(n, name))
			return e;
	}
	return NULL;
}

/* Change of each event since 'prev'; counters only go up, so a smaller
 * value means the event was reset and the delta is unknown. */
static void print_deltas(struct json_object *prev, struct json_object *cur, uint64_t period_ms)
{
	struct json_object *evs = get_arr(cur, "events");
	struct table t;

	printf("--- change over the last %" PRIu64 " ms\n", period_ms);
	table_init(&t, 6);
	table_row(&t, xstrdup("EVENT"), xstrdup("VALUE"), xstrdup("ENABLED(ns)"), xstrdup("RUNNING(ns)"),
		  xstrdup("SCALED"), xstrdup("MUX"));
	for (size_t i = 0; i < arr_len(evs); i++) {
		struct reading a, b;
		struct json_object *pe;

		reading_of(json_object_array_get_idx(evs, i), &b);
		if (!b.counted) {
			table_row(&t, xstrdup(b.event), not_counted(&b), NULL, NULL, NULL, NULL);
			continue;
		}
		pe = find_event(prev, b.event);
		if (!pe) {
			table_row(&t, xstrdup(b.event), xstrdup("(new event: no previous reading)"), NULL, NULL, NULL, NULL);
			continue;
		}
		reading_of(pe, &a);
		if (!a.counted) {
			table_row(&t, xstrdup(b.event), xstrdup("(not counted in the previous period)"), NULL, NULL, NULL,
				  NULL);
			continue;
		}
		bool dv = a.has_value && b.has_value && b.value >= a.value;
		bool de = a.has_enabled && b.has_enabled && b.enabled >= a.enabled;
		bool dr = a.has_running && b.has_running && b.running >= a.running;
		bool mux = (a.has_mux && a.mux) || (b.has_mux && b.mux) || (de && dr && b.running - a.running < b.enabled - a.enabled);

		table_row(&t, xstrdup(b.event), num_or_dash(dv, b.value - a.value), num_or_dash(de, b.enabled - a.enabled),
			  num_or_dash(dr, b.running - a.running),
			  a.has_scaled && b.has_scaled && b.scaled >= a.scaled ? xasprintf("%.0f", b.scaled - a.scaled)
									       : xstrdup("-"),
			  xstrdup(mux ? "yes" : "no"));
	}
	table_print(&t, "");
	fflush(stdout);
}

static void sleep_ms(uint64_t ms)
{
	struct timespec ts = { .tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static int session_read(struct ctl *x, int argc, char **argv)
{
	struct opt o[] = { { "interval", true, false, NULL }, { "count", true, false, NULL } };
	_cleanup_json_ struct json_object *params = NULL, *prev = NULL, *res = NULL;
	const char *pos[1];
	size_t npos;
	uint32_t interval = 0, count = 0;
	int r;

	if ((r = parse_opts(x, argc, argv, o, 2, pos, 1, &npos)))
		return r;
	if (npos != 1)
		return usage_error(x, "needs the session name");
	if ((r = check_name(x, "session name", pos[0])))
		return r;
	if (o[1].seen && !o[0].seen)
		return usage_error(x, "--count needs --interval MS");
	if (o[0].seen && (r = parse_u32(x, "--interval", o[0].val, 1, MAX_INTERVAL_MS, &interval)))
		return r;
	if (o[1].seen && (r = parse_u32(x, "--count", o[1].val, 1, UINT32_MAX, &count)))
		return r;
	params = name_params(pos[0]);
	if ((r = call(x, "session.read", params, &res)))
		return r;
	if (!interval) {
		if (x->json)
			print_json(res, false);
		else
			print_reading(res);
		return 0;
	}
	if (x->json)
		print_json(res, true);
	/* reads are timed from one start, so a slow answer does not make every
	 * later period drift */
	uint64_t start = vpmu_client_now_usec(), last = start;

	for (uint32_t i = 1; !count || i <= count; i++) {
		uint64_t due = start + (uint64_t)i * interval * 1000, now = vpmu_client_now_usec();

		if (due > now)
			sleep_ms((due - now) / 1000);
		prev = TAKE_PTR(res);
		if ((r = call(x, "session.read", params, &res)))
			return r;
		now = vpmu_client_now_usec();
		if (x->json)
			print_json(res, true);
		else
			print_deltas(prev, res, (now - last + 500) / 1000);
		fflush(stdout);
		last = now;
		json_object_put(TAKE_PTR(prev));
	}
	return 0;
}

/* ----------------------------------------------------------------- watch */

static void print_event(const struct vpmu_client_event *ev)
{
	const char *reason = get_str(ev->body, "reason");
	struct json_object *changes = get_arr(ev->body, "changes");

	char *fl = flavour_line(ev->body);

	printf("generation %" PRIu64 ": %s%s%s%s%s%s\n", ev->generation, ev->name, reason ? ": " : "", reason ? reason : "",
	       fl ? " (" : "", fl ? fl : "", fl ? ")" : "");
	free(fl);
	for (size_t i = 0; i < arr_len(changes); i++) {
		struct json_object *c = json_object_array_get_idx(changes, i);
		const char *vm = get_str(c, "vm"), *from = get_str(c, "from"), *to = get_str(c, "to");
		int64_t vcpu, gp, fixed;
		char ctr[32] = ""; /* " fixedN" */

		if (get_i64(c, "gp", &gp))
			snprintf(ctr, sizeof(ctr), " gp%" PRId64, gp);
		else if (get_i64(c, "fixed", &fixed))
			snprintf(ctr, sizeof(ctr), " fixed%" PRId64, fixed);
		if (vm && get_i64(c, "vcpu", &vcpu))
			printf("  %s vcpu %" PRId64 "%s: %s -> %s\n", vm, vcpu, ctr, from ? from : "?", to ? to : "?");
		else
			printf("  %s\n", json_object_to_json_string_ext(c, JSON_C_TO_STRING_PLAIN));
	}
}

static int cmd_watch(struct ctl *x, int argc, char **argv)
{
	struct opt o[] = { { "count", true, false, NULL } };
	struct vpmu_client_error e;
	const char *pos[1];
	size_t npos;
	uint32_t count = 0;
	uint64_t gen = 0;
	int r;

	if ((r = parse_opts(x, argc, argv, o, 1, pos, 0, &npos)))
		return r;
	if (o[0].seen && (r = parse_u32(x, "--count", o[0].val, 1, UINT32_MAX, &count)))
		return r;
	if ((r = connect_daemon(x)))
		return r;
	if ((r = vpmu_client_watch(x->c, deadline(x), &gen, &e)) < 0)
		return call_failed(r, &e);
	if (!x->json)
		printf("watching plan changes from generation %" PRIu64 "\n", gen);
	fflush(stdout);
	for (uint32_t i = 0; !count || i < count; i++) {
		struct vpmu_client_event ev;

		/* without an explicit --timeout, wait as long as it takes */
		r = vpmu_client_next_event(x->c, x->timeout_given ? deadline(x) : 0, &ev, &e);
		if (r == -ETIMEDOUT) {
			if (!x->json)
				printf("no event for %.1f s (--timeout); stopping\n", (double)x->timeout_usec / 1e6);
			return 0;
		}
		if (r < 0)
			return call_failed(r, &e);
		if (x->json)
			print_json(ev.body, true);
		else
			print_event(&ev);
		fflush(stdout);
		vpmu_client_event_fini(&ev);
	}
	return 0;
}

/* --------------------------------------------------- shell completion */

/*
 * Hidden "__complete vms|sessions": the live names, one per line, for
 * completion/vpmuctl. Not in --help: it is the completion's interface, not
 * an operator's. Names the protocol would refuse are left out so that
 * nothing odd reaches the shell's word list.
 */
static int cmd_complete(struct ctl *x, int argc, char **argv)
{
	static const struct {
		const char *kind, *method, *member;
	} kinds[] = { { "vms", "vm.list", "vms" }, { "sessions", "session.list", "sessions" } };
	struct json_object *res;
	int r;

	if (argc != 1)
		return usage_error(x, "needs one of vms, sessions");
	for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
		if (strcmp(argv[0], kinds[k].kind))
			continue;
		if ((r = call(x, kinds[k].method, NULL, &res)))
			return r;
		struct json_object *list = get_arr(res, kinds[k].member);

		for (size_t i = 0; i < arr_len(list); i++) {
			const char *name = get_str(json_object_array_get_idx(list, i), "name");

			if (name && proto_name_check("name", name, NULL) == 0)
				puts(name);
		}
		json_object_put(res);
		return 0;
	}
	return usage_error(x, "needs one of vms, sessions, got \"%s\"", argv[0]);
}

/* ------------------------------------------------------------------ main */

static void usage(FILE *f)
{
	fputs("usage: vpmuctl [--socket PATH] [--json] [--timeout SEC] COMMAND\n"
	      "\n"
	      "commands:\n"
	      "  status                         daemon, backends (simulated/advisory?), counts\n"
	      "  pmu                            the host PMU as vpmud sees it\n"
	      "  plan [--cpus LIST]             counter partition per CPU, routes per vCPU, session placement\n"
	      "  vm attach NAME [--priority P] [--class C] [--gp N] [--fixed MASK]\n"
	      "            (--vcpus N --cpus LIST | --vcpu-cpus LIST;LIST;...) [--pid PID [--vm-fd FD]]\n"
	      "  vm update NAME [--priority P] [--class C] [--gp N] [--fixed MASK]\n"
	      "            [--vcpus N --cpus LIST | --vcpu-cpus LIST;LIST;...]\n"
	      "  vm bind NAME --pid PID [--vm-fd FD | --route-fd N]\n"
	      "  vm detach NAME\n"
	      "  vm list\n"
	      "  vm show NAME\n"
	      "  session start NAME --events LIST (--cpus LIST | --pid PID) [--priority P] [--class C]\n"
	      "                [--owner-pid PID]    (default owner: the shell that ran vpmuctl)\n"
	      "                [--count-guest]      (insist on counting guest time; refused on a mediated vPMU)\n"
	      "  session read NAME [--interval MS [--count N]]\n"
	      "  session stop NAME\n"
	      "  session list\n"
	      "  watch [--count N]\n"
	      "  metrics                        the metrics text vpmud writes for node_exporter\n"
	      "\n"
	      "  --socket PATH   vpmud's socket (default $VPMU_SOCKET, else " VPMU_CLIENT_DEFAULT_SOCKET ")\n"
	      "  --json          print the daemon's result object as JSON\n"
	      "  --timeout SEC   give up on a request after SEC seconds (default 10; 0: never)\n"
	      "\n"
	      "exit status: 0 ok, 1 vpmud reported an error, 2 usage error, 3 cannot connect\n"
	      "see vpmuctl(1) (docs/vpmuctl.1.md)\n",
	      f);
}

struct command {
	const char *group, *name;
	int (*fn)(struct ctl *, int, char **);
};

static const struct command commands[] = {
	{ "status", NULL, cmd_status },
	{ "pmu", NULL, cmd_pmu },
	{ "plan", NULL, cmd_plan },
	{ "watch", NULL, cmd_watch },
	{ "metrics", NULL, cmd_metrics },
	{ "vm", "attach", vm_attach },
	{ "vm", "update", vm_update },
	{ "vm", "bind", vm_bind },
	{ "vm", "detach", vm_detach },
	{ "vm", "list", vm_list },
	{ "vm", "show", vm_show },
	{ "session", "start", session_start },
	{ "session", "read", session_read },
	{ "session", "stop", session_stop },
	{ "session", "list", session_list },
	{ "__complete", NULL, cmd_complete },
};

/* Global options may come anywhere: pull them out, leave the rest in order. */
static int take_globals(struct ctl *x, int *argc, char **argv)
{
	int out = 1;

	for (int i = 1; i < *argc; i++) {
		const char *a = argv[i];
		const char *val = NULL;

		if (!strcmp(a, "--json")) {
			x->json = true;
			continue;
		}
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			exit(0);
		}
		bool sock = !strncmp(a, "--socket", 8) && (a[8] == 0 || a[8] == '=');
		bool tmo = !strncmp(a, "--timeout", 9) && (a[9] == 0 || a[9] == '=');

		if (!sock && !tmo) {
			argv[out++] = argv[i];
			continue;
		}
		const char *eq = strchr(a, '=');

		if (eq) {
			val = eq + 1;
		} else if (i + 1 < *argc) {
			val = argv[++i];
		} else {
			return usage_error(x, "option %s needs a value", a);
		}
		if (sock) {
			if (!*val)
				return usage_error(x, "--socket: empty path");
			x->socket = val;
		} else {
			char *end;
			double s;

			errno = 0;
			s = strtod(val, &end);
			if (!*val || *end || errno || !isfinite(s) || s < 0 || s > 86400 || val[0] == ' ')
				return usage_error(x, "--timeout: must be seconds 0..86400 (0: no limit), got \"%s\"", val);
			x->timeout_usec = (uint64_t)(s * 1e6);
			if (s > 0 && x->timeout_usec == 0)
				x->timeout_usec = 1;
			x->timeout_given = true;
		}
	}
	*argc = out;
	argv[out] = NULL;
	return 0;
}

int main(int argc, char **argv)
{
	struct ctl x = { .prog = argv[0], .timeout_usec = DEFAULT_TIMEOUT_USEC };
	int r;

	if ((r = take_globals(&x, &argc, argv)))
		return r;
	if (!x.socket)
		x.socket = vpmu_client_default_socket();
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	const char *group = argv[1];
	bool known_group = false;

	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		const struct command *c = &commands[i];
		char cmd[32]; /* "group name" from the table above */

		if (strcmp(c->group, group))
			continue;
		known_group = true;
		if (c->name && (argc < 3 || strcmp(c->name, argv[2])))
			continue;
		snprintf(cmd, sizeof(cmd), "%s%s%s", c->group, c->name ? " " : "", c->name ? c->name : "");
		x.cmd = cmd;
		int skip = c->name ? 3 : 2;

		r = c->fn(&x, argc - skip, argv + skip);
		vpmu_client_close(x.c);
		if (fflush(stdout) != 0) {
			fprintf(stderr, "vpmuctl: cannot write the output: %s\n", strerror(errno));
			return r ? r : EXIT_DAEMON;
		}
		return r;
	}
	if (known_group && argc < 3)
		return usage_error(&x, "'%s' needs a subcommand", group);
	if (known_group)
		return usage_error(&x, "unknown subcommand '%s %s'", group, argv[2]);
	return usage_error(&x, "unknown command '%s'", group);
}
