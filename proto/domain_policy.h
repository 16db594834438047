/* SPDX-License-Identifier: MIT */
/*
 * domain_policy: turns a libvirt domain XML into the PMU request of one VM.
 *
 * What it reads (docs/libvirt.md has the full schema):
 *   <name>, <uuid>   the name must pass proto_name_check: vpmu's lease for
 *                    the VM carries it (libvirt allows more, e.g. spaces)
 *   <metadata><vpmu:pmu xmlns:vpmu="https://vpmu.org/xmlns/libvirt/1"
 *                       priority="200" class="guaranteed" gp="4" fixed="0x3"/>
 *   <features><pmu state="on|off"/>   off: no vPMU, nothing is requested
 *   <vcpu current="N" cpuset="...">M</vcpu>   cpuset: default CPUs of every vCPU
 *   <cputune><vcpupin vcpu="i" cpuset="..."/>  overrides the default per vCPU
 *                                              (<emulatorpin> is not a vCPU: ignored)
 *
 * Every attribute of <vpmu:pmu> is optional; a missing one takes the
 * caller's default, and so does every field when the element is absent.
 * An element in another version of our namespace
 * (https://vpmu.org/xmlns/libvirt/N, N != 1) is refused, not ignored: it is
 * clearly meant for vpmu, and silently applying the defaults to a VM whose
 * owner asked for something we cannot read would hide the problem.
 *
 * The parser does no I/O and keeps no state, so the hook (a short-lived
 * process) and the daemon share it.
 */
#ifndef VPMU_DOMAIN_POLICY_H
#define VPMU_DOMAIN_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/cpulist.h"

#define DOMAIN_POLICY_NS_URI "https://vpmu.org/xmlns/libvirt/1"
/* Any URI with this prefix is "ours", whatever the version after it. */
#define DOMAIN_POLICY_NS_URI_BASE "https://vpmu.org/xmlns/libvirt/"
#define DOMAIN_POLICY_ELEMENT "pmu"

/* The largest host_cpus accepted: what a cpulist holds. */
#define DOMAIN_POLICY_MAX_CPUS CPULIST_MAX_CPUS

#define DOMAIN_POLICY_MAX_VCPUS 4096
#define DOMAIN_POLICY_MAX_GP 32
/* PERF_GLOBAL_CTRL has 16 bits (32..47) for fixed counters. */
#define DOMAIN_POLICY_MAX_FIXED_MASK 0xffffu
#define DOMAIN_POLICY_MAX_PRIORITY 1000
/* Room for any message domain_policy_parse writes: what it quotes from the
 * XML is cut to a few dozen characters, libxml2's own message to
 * DOMAIN_POLICY_XML_ERR_MAX. */
#define DOMAIN_POLICY_ERR_MAX 512
#define DOMAIN_POLICY_XML_ERR_MAX 200
/* Far above any real domain XML; bounds what one hook run may allocate. */
#define DOMAIN_POLICY_MAX_XML (8u << 20)

/* What a domain without (part of) our metadata gets. */
struct domain_policy_defaults {
	int priority;
	const char *cls;       /* guaranteed, preferred, shared */
	unsigned gp;
	uint32_t fixed_mask;
};

struct dompol {
	char *name;
	char uuid[37];             /* canonical lower-case 8-4-4-4-12 */
	int priority;
	char cls[16];
	bool guaranteed;           /* cls is "guaranteed" */
	unsigned gp;               /* 0 when pmu_off */
	uint32_t fixed_mask;       /* 0 when pmu_off */
	bool pmu_off;              /* <features><pmu state="off"/> */
	bool metadata_present;     /* a <vpmu:pmu> element was found */
	bool placement_auto;       /* <vcpu placement="auto">: numad picks CPUs later */
	unsigned n_vcpus;          /* maximum vCPUs (<vcpu> content) */
	unsigned n_vcpus_current;  /* vCPUs online at start (current=, else n_vcpus) */
	unsigned host_cpus;        /* the bound the cpusets were checked against */
	struct cpulist *vcpu_cpus; /* n_vcpus entries: where each vCPU may run */
};

/*
 * Parses xml (len bytes, need not be NUL-terminated). host_cpus
 * (1..CPULIST_MAX_CPUS) bounds every cpuset (cpulist_parse_libvirt); a
 * cpuset naming a CPU at or above it is an error.
 *
 * Returns 0, or a negative errno with err naming the element and attribute
 * (printable ASCII only: what it quotes of the XML has '?' for other bytes):
 *   -EINVAL           malformed XML, domain or metadata
 *   -EPROTONOSUPPORT  an element in another version of our namespace
 *   -E2BIG            xml larger than DOMAIN_POLICY_MAX_XML
 *   -ENOMEM
 * On failure out->name, out->uuid, out->cls and out->guaranteed hold what
 * could be read before the error (guaranteed is true only if a valid class
 * attribute, or the default when there is no metadata, said so), so a
 * caller can decide to refuse only guaranteed VMs; other fields are zero.
 * Always call domain_policy_clear afterwards.
 */
int domain_policy_parse(const char *xml, size_t len, const struct domain_policy_defaults *def, unsigned host_cpus,
		 struct dompol *out, char *err, size_t errlen);

void domain_policy_clear(struct dompol *p);

#endif
