/* SPDX-License-Identifier: MIT */
#include "proto/domain_policy.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xpath.h>
#include <libxml/xpathInternals.h>

#include "proto/cleanup.h"
#include "proto/proto.h"

#define ERR(...) snprintf(err, errlen, __VA_ARGS__)

/* libxml2's releases; xmlFree is a function pointer, so it gets a wrapper */
static inline void xml_free(xmlChar *x)
{
	xmlFree(x);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(xmlChar *, xml_free)
DEFINE_TRIVIAL_CLEANUP_FUNC(xmlXPathObjectPtr, xmlXPathFreeObject)
DEFINE_TRIVIAL_CLEANUP_FUNC(xmlXPathContextPtr, xmlXPathFreeContext)
DEFINE_TRIVIAL_CLEANUP_FUNC(xmlDocPtr, xmlFreeDoc)
DEFINE_TRIVIAL_CLEANUP_FUNC(xmlParserCtxtPtr, xmlFreeParserCtxt)
#define _cleanup_xml_ _cleanup_(xml_freep)
#define _cleanup_xpath_ _cleanup_(xmlXPathFreeObjectp)

/* ------------------------------------------------------------- XML helpers */

/* libxml2 reports some errors (bytes its encoding converter refuses)
 * through its generic handler, which prints to stderr whatever
 * XML_PARSE_NOERROR says: four lines per parse into libvirt's log or
 * vpmud's journal, outside the one message domain_policy_parse gives. */
static void xml_quiet(void *ctx, const char *msg, ...)
{
	(void)ctx, (void)msg;
}

struct ctx {
	xmlDocPtr doc;
	xmlXPathContextPtr xp;
	char *err;
	size_t errlen;
};

/* Returns the nodes of expr (owned by the caller) or NULL on an XPath error. */
static xmlXPathObjectPtr eval(struct ctx *c, const char *expr)
{
	return xmlXPathEvalExpression((const xmlChar *)expr, c->xp);
}

static int node_count(xmlXPathObjectPtr o)
{
	return o && o->nodesetval ? o->nodesetval->nodeNr : 0;
}

/* The single element matching expr: 0 none, 1 found, <0 more than one. */
static int single(struct ctx *c, const char *expr, const char *what, xmlNodePtr *out)
{
	_cleanup_xpath_ xmlXPathObjectPtr o = eval(c, expr);
	int n = node_count(o);
	*out = n == 1 ? o->nodesetval->nodeTab[0] : NULL;
	if (n > 1) {
		snprintf(c->err, c->errlen, "%s: appears %d times, at most once allowed", what, n);
		return -EINVAL;
	}
	return n;
}

/* Copies the node's text, trimmed; NULL on ENOMEM. */
static char *text_of(xmlNodePtr n)
{
	_cleanup_xml_ xmlChar *x = xmlNodeGetContent(n);
	if (!x)
		return strdup("");
	const char *s = (const char *)x;
	while (isspace((unsigned char)*s))
		s++;
	size_t len = strlen(s);
	while (len && isspace((unsigned char)s[len - 1]))
		len--;
	return strndup(s, len);
}

/* Strict unsigned decimal integer. */
static int parse_uint(const char *s, unsigned long max, unsigned long *out)
{
	if (!isdigit((unsigned char)*s))
		return -EINVAL;
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || *end || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

/* Accepts 32 hex digits with dashes anywhere between them, as libvirt does,
 * and writes the canonical form. */
static int parse_uuid(const char *s, char out[37])
{
	unsigned char hex[32];
	unsigned n = 0;
	for (; *s; s++) {
		if (*s == '-')
			continue;
		if (!isxdigit((unsigned char)*s) || n == 32)
			return -EINVAL;
		hex[n++] = (unsigned char)tolower((unsigned char)*s);
	}
	if (n != 32)
		return -EINVAL;
	unsigned o = 0;
	for (unsigned i = 0; i < 32; i++) {
		if (i == 8 || i == 12 || i == 16 || i == 20)
			out[o++] = '-';
		out[o++] = (char)hex[i];
	}
	out[o] = 0;
	return 0;
}

/* ------------------------------------------------------------------ pieces */

static int parse_identity(struct ctx *c, struct dompol *out)
{
	xmlNodePtr n;
	int r;

	if ((r = single(c, "/domain/name", "<name>", &n)) < 0)
		return r;
	if (!n) {
		snprintf(c->err, c->errlen, "<name>: missing");
		return -EINVAL;
	}
	if (!(out->name = text_of(n)))
		return -ENOMEM;
	if (!out->name[0]) {
		snprintf(c->err, c->errlen, "<name>: empty");
		return -EINVAL;
	}
	{
		struct proto_error pe;

		/* The lease is named after the domain, so libvirt's wider
		 * rule is not enough; the name itself is not quoted, it may
		 * hold any character (the caller has it from libvirt anyway). */
		if (proto_name_check("<name>", out->name, &pe) < 0) {
			snprintf(c->err, c->errlen, "%s (vpmu names the VM's lease after the domain)", pe.message);
			return -EINVAL;
		}
	}
	if ((r = single(c, "/domain/uuid", "<uuid>", &n)) < 0)
		return r;
	if (!n) {
		snprintf(c->err, c->errlen, "<uuid>: missing");
		return -EINVAL;
	}
	_cleanup_free_ char *u = text_of(n);
	if (!u)
		return -ENOMEM;
	r = parse_uuid(u, out->uuid);
	if (r < 0)
		snprintf(c->err, c->errlen, "<uuid>: not a UUID: \"%.64s\"", u);
	return r;
}

static int parse_pmu_feature(struct ctx *c, struct dompol *out)
{
	xmlNodePtr n;
	int r = single(c, "/domain/features/pmu", "<features><pmu>", &n);
	if (r <= 0)
		return r;
	_cleanup_xml_ xmlChar *st = xmlGetProp(n, (const xmlChar *)"state");
	if (!st) {
		/* libvirt requires state; an element without it is not one libvirt wrote */
		snprintf(c->err, c->errlen, "<features><pmu>: attribute \"state\" missing");
		return -EINVAL;
	}
	if (!strcmp((char *)st, "off"))
		out->pmu_off = true;
	else if (strcmp((char *)st, "on")) {
		snprintf(c->err, c->errlen, "<features><pmu> attribute \"state\": must be on or off, got \"%.32s\"",
			 (char *)st);
		return -EINVAL;
	}
	return 0;
}

/* Our attributes, in the order they are checked: class first, so that the
 * caller learns whether the VM is guaranteed even if a later one is bad. */
static const char *const pmu_attrs[] = { "class", "priority", "gp", "fixed" };

#define PMU_TAG "<vpmu:pmu>"

/* An optional unsigned attribute of <vpmu:pmu>: 1 read, 0 absent, <0 bad. */
static int attr_uint(struct ctx *c, xmlNodePtr el, const char *name, unsigned long max, unsigned long *out)
{
	_cleanup_xml_ xmlChar *v = xmlGetNoNsProp(el, (const xmlChar *)name);

	if (!v)
		return 0;
	if (parse_uint((char *)v, max, out) == 0)
		return 1;
	snprintf(c->err, c->errlen, PMU_TAG " attribute \"%s\": must be an integer 0..%lu, got \"%.32s\"", name, max,
		 (char *)v);
	return -EINVAL;
}

static int parse_pmu_element(struct ctx *c, xmlNodePtr el, struct dompol *out)
{
	unsigned long x;
	int r;

	{
		_cleanup_xml_ xmlChar *v = xmlGetNoNsProp(el, (const xmlChar *)"class");

		if (v && proto_class_from_name((char *)v) < 0) {
			snprintf(c->err, c->errlen,
				 PMU_TAG " attribute \"class\": must be guaranteed, preferred or shared, got \"%.32s\"",
				 (char *)v);
			out->cls[0] = 0;
			out->guaranteed = false;
			return -EINVAL;
		}
		if (v) {
			snprintf(out->cls, sizeof(out->cls), "%s", (char *)v);
			out->guaranteed = !strcmp(out->cls, "guaranteed");
		}
	}
	for (xmlAttrPtr a = el->properties; a; a = a->next) {
		bool known = false;
		for (size_t i = 0; i < sizeof(pmu_attrs) / sizeof(pmu_attrs[0]); i++)
			known |= !strcmp((const char *)a->name, pmu_attrs[i]);
		if (!known || a->ns) {
			snprintf(c->err, c->errlen, PMU_TAG ": unknown attribute \"%s%s%.64s\"",
				 a->ns && a->ns->prefix ? (const char *)a->ns->prefix : "",
				 a->ns && a->ns->prefix ? ":" : "", (const char *)a->name);
			return -EINVAL;
		}
	}
	for (xmlNodePtr ch = el->children; ch; ch = ch->next) {
		if (ch->type == XML_ELEMENT_NODE) {
			snprintf(c->err, c->errlen, PMU_TAG ": unexpected child element <%.64s>", (const char *)ch->name);
			return -EINVAL;
		}
		if (ch->type == XML_TEXT_NODE) {
			_cleanup_xml_ xmlChar *t = xmlNodeGetContent(ch);
			bool blank = true;
			for (const xmlChar *q = t; q && *q; q++)
				blank &= isspace(*q) != 0;
			if (!blank) {
				snprintf(c->err, c->errlen, PMU_TAG ": unexpected text content");
				return -EINVAL;
			}
		}
	}

	if ((r = attr_uint(c, el, "priority", DOMAIN_POLICY_MAX_PRIORITY, &x)) < 0)
		return r;
	if (r)
		out->priority = (int)x;
	if ((r = attr_uint(c, el, "gp", DOMAIN_POLICY_MAX_GP, &x)) < 0)
		return r;
	if (r)
		out->gp = (unsigned)x;
	{
		_cleanup_xml_ xmlChar *v = xmlGetNoNsProp(el, (const xmlChar *)"fixed");
		uint32_t mask;

		/* the protocol's text rule for a mask, as vpmuctl --fixed */
		if (v && proto_fixed_mask_parse((const char *)v, &mask) < 0) {
			snprintf(c->err, c->errlen,
				 PMU_TAG " attribute \"fixed\": must be a mask 0..0x%x (decimal, or 0x and 1..4 hex digits), got \"%.32s\"",
				 DOMAIN_POLICY_MAX_FIXED_MASK, (char *)v);
			return -EINVAL;
		}
		if (v)
			out->fixed_mask = mask;
	}
	return 0;
}

static int parse_metadata(struct ctx *c, struct dompol *out)
{
	_cleanup_xpath_ xmlXPathObjectPtr o = eval(c, "/domain/metadata/*");
	int n = node_count(o);
	xmlNodePtr ours = NULL;

	for (int i = 0; i < n; i++) {
		xmlNodePtr el = o->nodesetval->nodeTab[i];
		const char *uri = el->ns ? (const char *)el->ns->href : NULL;
		if (!uri || strncmp(uri, DOMAIN_POLICY_NS_URI_BASE, strlen(DOMAIN_POLICY_NS_URI_BASE)))
			continue; /* another application's metadata */
		if (strcmp(uri, DOMAIN_POLICY_NS_URI)) {
			snprintf(c->err, c->errlen,
				 "<metadata>: element <%.64s> is in namespace \"%.128s\", this vpmu reads only \"%s\"",
				 (const char *)el->name, uri, DOMAIN_POLICY_NS_URI);
			return -EPROTONOSUPPORT;
		}
		if (strcmp((const char *)el->name, DOMAIN_POLICY_ELEMENT)) {
			snprintf(c->err, c->errlen, "<metadata>: unknown element <vpmu:%.64s> (expected <vpmu:%s>)",
				 (const char *)el->name, DOMAIN_POLICY_ELEMENT);
			return -EINVAL;
		}
		if (ours) {
			snprintf(c->err, c->errlen, "<metadata>: <vpmu:%s> appears more than once", DOMAIN_POLICY_ELEMENT);
			return -EINVAL;
		}
		ours = el;
	}
	if (!ours)
		return 0;
	out->metadata_present = true;
	return parse_pmu_element(c, ours, out);
}

/* <vcpu>: how many vCPUs, how many online, and the CPUs of every vCPU that
 * no <vcpupin> names (all of the host's when it says nothing). */
static int parse_vcpu_element(struct ctx *c, unsigned host_cpus, struct dompol *out, struct cpulist *dflt)
{
	char why[CPULIST_WHY_MAX];
	xmlNodePtr n;
	unsigned long v;
	int r;

	cpulist_clear(dflt);
	for (unsigned i = 0; i < host_cpus; i++)
		cpulist_set(dflt, i);
	out->n_vcpus = 1; /* libvirt's default when <vcpu> is absent */
	if ((r = single(c, "/domain/vcpu", "<vcpu>", &n)) <= 0)
		return r;
	{
		_cleanup_free_ char *t = text_of(n);

		if (!t)
			return -ENOMEM;
		if (parse_uint(t, DOMAIN_POLICY_MAX_VCPUS, &v) < 0 || v == 0) {
			snprintf(c->err, c->errlen, "<vcpu>: must be an integer 1..%d, got \"%.32s\"",
				 DOMAIN_POLICY_MAX_VCPUS, t);
			return -EINVAL;
		}
		out->n_vcpus = (unsigned)v;
	}
	{
		_cleanup_xml_ xmlChar *a = xmlGetProp(n, (const xmlChar *)"current");

		if (a && (parse_uint((char *)a, out->n_vcpus, &v) < 0 || v == 0)) {
			snprintf(c->err, c->errlen, "<vcpu> attribute \"current\": must be an integer 1..%u, got \"%.32s\"",
				 out->n_vcpus, (char *)a);
			return -EINVAL;
		}
		if (a)
			out->n_vcpus_current = (unsigned)v;
	}
	{
		_cleanup_xml_ xmlChar *a = xmlGetProp(n, (const xmlChar *)"placement");

		out->placement_auto = a && !strcmp((char *)a, "auto");
	}
	/* With placement="auto" libvirt asks numad and ignores cpuset. */
	if (!out->placement_auto) {
		_cleanup_xml_ xmlChar *a = xmlGetProp(n, (const xmlChar *)"cpuset");

		if (a && (r = cpulist_parse_libvirt((char *)a, host_cpus, dflt, why, sizeof(why))) < 0) {
			snprintf(c->err, c->errlen, "<vcpu> attribute \"cpuset\": %s (\"%.64s\")", why, (char *)a);
			return r;
		}
	}
	return 0;
}

/* One <cputune><vcpupin>: the CPUs of the vCPU it names, once. */
static int parse_vcpupin(struct ctx *c, xmlNodePtr p, unsigned host_cpus, struct dompol *out, bool *pinned)
{
	_cleanup_xml_ xmlChar *vc = xmlGetProp(p, (const xmlChar *)"vcpu");
	_cleanup_xml_ xmlChar *cs = xmlGetProp(p, (const xmlChar *)"cpuset");
	char why[CPULIST_WHY_MAX];
	unsigned long v;
	int r;

	if (!vc) {
		snprintf(c->err, c->errlen, "<cputune><vcpupin>: attribute \"vcpu\" missing");
		return -EINVAL;
	}
	if (parse_uint((char *)vc, out->n_vcpus - 1, &v) < 0) {
		snprintf(c->err, c->errlen,
			 "<cputune><vcpupin> attribute \"vcpu\": must be an integer 0..%u (the domain has %u vCPUs), got \"%.32s\"",
			 out->n_vcpus - 1, out->n_vcpus, (char *)vc);
		return -EINVAL;
	}
	if (pinned[v]) {
		snprintf(c->err, c->errlen, "<cputune><vcpupin vcpu='%lu'>: vCPU pinned twice", v);
		return -EINVAL;
	}
	if (!cs) {
		snprintf(c->err, c->errlen, "<cputune><vcpupin vcpu='%lu'>: attribute \"cpuset\" missing", v);
		return -EINVAL;
	}
	if ((r = cpulist_parse_libvirt((char *)cs, host_cpus, &out->vcpu_cpus[v], why, sizeof(why))) < 0) {
		snprintf(c->err, c->errlen, "<cputune><vcpupin vcpu='%lu'> attribute \"cpuset\": %s (\"%.64s\")", v, why,
			 (char *)cs);
		return r;
	}
	pinned[v] = true;
	return 0;
}

static int parse_vcpus(struct ctx *c, unsigned host_cpus, struct dompol *out)
{
	_cleanup_xpath_ xmlXPathObjectPtr o = NULL;
	_cleanup_free_ bool *pinned = NULL;
	struct cpulist dflt;
	int r, cnt;

	if ((r = parse_vcpu_element(c, host_cpus, out, &dflt)) < 0)
		return r;
	if (!out->n_vcpus_current)
		out->n_vcpus_current = out->n_vcpus;

	out->vcpu_cpus = calloc(out->n_vcpus, sizeof(*out->vcpu_cpus));
	pinned = calloc(out->n_vcpus, sizeof(bool));
	if (!out->vcpu_cpus || !pinned)
		return -ENOMEM;
	for (unsigned i = 0; i < out->n_vcpus; i++)
		out->vcpu_cpus[i] = dflt;

	o = eval(c, "/domain/cputune/vcpupin");
	cnt = node_count(o);
	for (int i = 0; i < cnt; i++)
		if ((r = parse_vcpupin(c, o->nodesetval->nodeTab[i], host_cpus, out, pinned)) < 0)
			return r;
	return 0;
}

/* -------------------------------------------------------------------- main */

void domain_policy_clear(struct dompol *p)
{
	free(p->name);
	free(p->vcpu_cpus);
	memset(p, 0, sizeof(*p));
}

/* Keeps only what domain_policy_parse promises to leave on failure. */
static void keep_identity_only(struct dompol *p)
{
	struct dompol k = { .name = p->name, .guaranteed = p->guaranteed };
	memcpy(k.uuid, p->uuid, sizeof(k.uuid));
	memcpy(k.cls, p->cls, sizeof(k.cls));
	free(p->vcpu_cpus);
	*p = k;
}

/* Everything after the document is read: its parts in order. */
static int parse_domain(struct ctx *c, unsigned host_cpus, struct dompol *out)
{
	int r;

	/* The class is read even when the identity is broken, so that the
	 * caller can still tell a guaranteed VM from the others. */
	if ((r = parse_identity(c, out)) < 0) {
		struct ctx quiet = { .doc = c->doc, .xp = c->xp };

		if (parse_metadata(&quiet, out) == -EPROTONOSUPPORT)
			out->guaranteed = false;
		return r;
	}
	if ((r = parse_metadata(c, out)) < 0) {
		if (r == -EPROTONOSUPPORT) {
			/* we cannot know what class that version asked for */
			out->cls[0] = 0;
			out->guaranteed = false;
		}
		return r;
	}
	if ((r = parse_pmu_feature(c, out)) < 0)
		return r;
	if (out->pmu_off) {
		out->gp = 0;
		out->fixed_mask = 0;
	}
	return parse_vcpus(c, host_cpus, out);
}

static int parse_document(const char *xml, size_t len, const struct domain_policy_defaults *def, unsigned host_cpus,
			  struct dompol *out, char *err, size_t errlen)
{
	_cleanup_(xmlFreeParserCtxtp) xmlParserCtxtPtr pc = NULL;
	_cleanup_(xmlFreeDocp) xmlDocPtr doc = NULL;
	_cleanup_(xmlXPathFreeContextp) xmlXPathContextPtr xp = NULL;
	struct ctx c = { .err = err, .errlen = errlen };
	int r;

	memset(out, 0, sizeof(*out));
	if (errlen)
		err[0] = 0;
	if (!def || !def->cls || proto_class_from_name(def->cls) < 0 || def->gp > DOMAIN_POLICY_MAX_GP ||
	    def->fixed_mask > DOMAIN_POLICY_MAX_FIXED_MASK || def->priority < 0 || def->priority > DOMAIN_POLICY_MAX_PRIORITY) {
		ERR("default policy invalid");
		return -EINVAL;
	}
	if (host_cpus == 0 || host_cpus > CPULIST_MAX_CPUS) {
		ERR("host CPU count %u out of range 1..%u", host_cpus, CPULIST_MAX_CPUS);
		return -EINVAL;
	}
	if (len > DOMAIN_POLICY_MAX_XML) {
		ERR("domain XML is %zu bytes, more than the %u accepted", len, DOMAIN_POLICY_MAX_XML);
		return -E2BIG;
	}
	out->priority = def->priority;
	snprintf(out->cls, sizeof(out->cls), "%s", def->cls);
	out->guaranteed = !strcmp(def->cls, "guaranteed");
	out->gp = def->gp;
	out->fixed_mask = def->fixed_mask;
	out->host_cpus = host_cpus;

	xmlInitParser();
	if (!(pc = xmlNewParserCtxt()))
		return -ENOMEM;
	/* NONET: a domain XML never needs the network; no NOENT: entities are
	 * not expanded, and a DTD is refused below anyway. */
	{
		/* the handler is libxml2's per-thread state: put back as found */
		xmlGenericErrorFunc was = xmlGenericError;
		void *was_ctx = xmlGenericErrorContext;

		xmlSetGenericErrorFunc(NULL, xml_quiet);
		doc = xmlCtxtReadMemory(pc, xml, (int)len, "domain.xml", NULL,
					XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
		xmlSetGenericErrorFunc(was_ctx, was);
	}
	if (!doc) {
		const xmlError *e = &pc->lastError;
		const char *msg = e->message ? e->message : "parse error";

		/* libxml2's message, up to its first line break */
		size_t n = strcspn(msg, "\n");
		ERR("domain XML: line %d: %.*s", e->line,
		    (int)(n < DOMAIN_POLICY_XML_ERR_MAX ? n : DOMAIN_POLICY_XML_ERR_MAX), msg);
		keep_identity_only(out);
		return -EINVAL;
	}
	if (doc->intSubset) {
		/* libvirt never writes a DOCTYPE; one here could only carry entity tricks */
		ERR("domain XML: a DOCTYPE is not accepted");
		keep_identity_only(out);
		return -EINVAL;
	}
	xmlNodePtr root = xmlDocGetRootElement(doc);
	if (!root || strcmp((const char *)root->name, "domain") || root->ns) {
		ERR("domain XML: root element must be <domain>, got <%.64s>", root ? (const char *)root->name : "");
		keep_identity_only(out);
		return -EINVAL;
	}
	if (!(xp = xmlXPathNewContext(doc))) {
		keep_identity_only(out);
		return -ENOMEM;
	}
	c.doc = doc;
	c.xp = xp;
	r = parse_domain(&c, host_cpus, out);
	if (r < 0)
		keep_identity_only(out);
	return r;
}

int domain_policy_parse(const char *xml, size_t len, const struct domain_policy_defaults *def, unsigned host_cpus,
		 struct dompol *out, char *err, size_t errlen)
{
	int r = parse_document(xml, len, def, host_cpus, out, err, errlen);

	/* Messages quote the XML (values, names, libxml2's text): anything
	 * but printable ASCII becomes '?', so no domain XML puts a line break,
	 * an escape sequence or a cut UTF-8 character into a log line. */
	for (size_t i = 0; r < 0 && i < errlen && err[i]; i++)
		if ((unsigned char)err[i] < 0x20 || (unsigned char)err[i] > 0x7e)
			err[i] = '?';
	return r;
}
