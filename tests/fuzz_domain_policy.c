// SPDX-License-Identifier: MIT
/*
 * libFuzzer target: the libvirt domain XML as the hook reads it from stdin
 * and the libvirt follower from virDomainGetXMLDesc, through
 * domain_policy_parse. The first input bytes pick the host's CPU count and
 * the caller's defaults, so bounds and defaults vary with the XML; on
 * success everything domain_policy.h promises is checked, on failure what
 * it promises to keep, and domain_policy_clear runs either way.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/cpulist.h"
#include "proto/domain_policy.h"
#include <errno.h>

/* An invariant that does not hold: says which, then crashes for libFuzzer. */
#define VIOLATED_IF(cond)                                                   \
	do {                                                                \
		if (cond) {                                                 \
			fprintf(stderr, "invariant violated: %s\n", #cond); \
			abort();                                            \
		}                                                           \
	} while (0)

#include "proto/proto.h"

static const char *const classes[] = { "guaranteed", "preferred", "shared" };

static void check_uuid(const char *u)
{
	for (unsigned i = 0; i < 36; i++) {
		bool dash = i == 8 || i == 13 || i == 18 || i == 23;

		VIOLATED_IF(dash ? u[i] != '-' : !((u[i] >= '0' && u[i] <= '9') || (u[i] >= 'a' && u[i] <= 'f')));
	}
	VIOLATED_IF(u[36]);
}

static void check_success(const struct dompol *p, const struct domain_policy_defaults *def, unsigned host_cpus)
{
	struct proto_error perr;

	/* the name becomes a lease name: it must pass the protocol's rule */
	VIOLATED_IF(!p->name || proto_name_check("name", p->name, &perr) != 0);
	check_uuid(p->uuid);
	VIOLATED_IF(proto_class_from_name(p->cls) < 0 || p->guaranteed != !strcmp(p->cls, "guaranteed"));
	VIOLATED_IF(p->priority < 0 || p->priority > DOMAIN_POLICY_MAX_PRIORITY || p->gp > DOMAIN_POLICY_MAX_GP ||
	    p->fixed_mask > DOMAIN_POLICY_MAX_FIXED_MASK);
	VIOLATED_IF(p->pmu_off && (p->gp || p->fixed_mask));
	VIOLATED_IF(!p->metadata_present &&
	    (p->priority != def->priority || strcmp(p->cls, def->cls) ||
	     (!p->pmu_off && (p->gp != def->gp || p->fixed_mask != def->fixed_mask))));
	VIOLATED_IF(p->n_vcpus < 1 || p->n_vcpus > DOMAIN_POLICY_MAX_VCPUS || p->n_vcpus_current < 1 ||
	    p->n_vcpus_current > p->n_vcpus || p->host_cpus != host_cpus || !p->vcpu_cpus);
	for (unsigned v = 0; v < p->n_vcpus; v++) {
		int last = -1;

		/* every vCPU may run somewhere, and only on the host's CPUs */
		VIOLATED_IF(cpulist_empty(&p->vcpu_cpus[v]));
		for (int c = cpulist_next(&p->vcpu_cpus[v], -1); c >= 0; c = cpulist_next(&p->vcpu_cpus[v], c))
			last = c;
		VIOLATED_IF(last < 0 || (unsigned)last >= host_cpus);
	}
}

/* On failure only the identity may be left (domain_policy.h). */
static void check_failure(const struct dompol *p)
{
	VIOLATED_IF(p->priority || p->gp || p->fixed_mask || p->pmu_off || p->metadata_present || p->placement_auto ||
	    p->n_vcpus || p->n_vcpus_current || p->host_cpus || p->vcpu_cpus);
	VIOLATED_IF(p->guaranteed && strcmp(p->cls, "guaranteed"));
	VIOLATED_IF(memchr(p->cls, 0, sizeof(p->cls)) == NULL || memchr(p->uuid, 0, sizeof(p->uuid)) == NULL);
	if (p->uuid[0])
		check_uuid(p->uuid);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct dompol p;
	char err[DOMAIN_POLICY_ERR_MAX];
	struct domain_policy_defaults def;
	unsigned host_cpus;
	int r;

	if (size < 4)
		return 0;
	/* byte 0-1: host CPUs, 1..4096, small counts more often (the bounds
	 * a cpuset can cross); byte 2: class and gp; byte 3: fixed mask bits */
	host_cpus = data[0] & 0x80 ? ((unsigned)(data[0] & 0x0f) << 8 | data[1]) + 1 : (unsigned)(data[1] & 0x3f) + 1;
	def.cls = classes[(data[2] >> 6) % 3];
	def.gp = data[2] & 0x3f;
	if (def.gp > DOMAIN_POLICY_MAX_GP)
		def.gp = DOMAIN_POLICY_MAX_GP;
	def.fixed_mask = data[3] & 0x0f;
	def.priority = data[3] >> 4 ? (data[3] >> 4) * 60 : 100;
	data += 4;
	size -= 4;

	memset(err, 'x', sizeof(err));
	r = domain_policy_parse((const char *)data, size, &def, host_cpus, &p, err, sizeof(err));
	VIOLATED_IF(!memchr(err, 0, sizeof(err)));
	if (r == 0) {
		check_success(&p, &def, host_cpus);
	} else {
		/* a refusal names what was wrong */
		VIOLATED_IF(!err[0] || (r != -EINVAL && r != -EPROTONOSUPPORT && r != -E2BIG && r != -ENOMEM));
		/* it reaches logs: one line of printable ASCII */
		for (const char *q = err; *q; q++)
			VIOLATED_IF((unsigned char)*q < 0x20 || (unsigned char)*q > 0x7e);
		check_failure(&p);
	}
	domain_policy_clear(&p);
	VIOLATED_IF(p.name || p.vcpu_cpus);
	return 0;
}
