/* SPDX-License-Identifier: MIT */
/*
 * vpmud entry point. Without an action it runs the daemon (vpmud.c); the
 * actions answer "which PMU would the daemon manage, what would a guest
 * see, and which vPMU does KVM give guests here?", and say where the answer
 * came from.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvm/kvm_detect.h"
#include "pmu/pmu.h"
#include "pmu/pmu_discover.h"
#include "pmu/pmu_model.h"
#include "proto/cleanup.h"
#include "vpmud.h"

enum action {
	ACT_NONE = 0,
	ACT_PRINT_PMU,
	ACT_PRINT_GUEST,
	ACT_LIST_MODELS,
	ACT_PRINT_KVM,
	ACT_HELP,
};

struct args {
	enum action action;
	const char *pmu;            /* NULL or "auto": discover the host */
	const char *sysfs_root;
	const char *procfs_root;
	struct vpmud_opts daemon;
	bool have_gp, have_fixed, have_version;
	struct pmu_guest_shape guest;
};

/* Exit codes: 0 done, 1 the machine could not be read, 2 bad request. */
enum { EXIT_USAGE = 2 };

static void usage(FILE *f)
{
	fprintf(f,
		"usage: vpmud [DAEMON OPTIONS]            run the daemon (foreground)\n"
		"       vpmud [--pmu MODEL|PATH|auto] ACTION [GUEST OPTIONS]\n"
		"\n"
		"daemon options (override the config file):\n"
		"  --config FILE          config file (default /etc/vpmu/vpmud.conf, may be absent)\n"
		"  --socket PATH          Unix socket to listen on (default /run/vpmu/vpmud.sock)\n"
		"  --state-dir DIR        durable lease state (default /var/lib/vpmu)\n"
		"  --kvm BACKEND          auto|ioctl|advisory|model (default auto: the kernel's\n"
		"                         vpmu extension, else advisory for this host's vPMU\n"
		"                         flavour; model: the in-process model of the extension,\n"
		"                         simulated, for demos and tests)\n"
		"  --kvm-reserve uniform|per-cpu\n"
		"                         --kvm model only: the model's perf half takes one guest\n"
		"                         reservation for every CPU (uniform, as a first kernel\n"
		"                         may) or one per CPU (per-cpu, default); vpmud plans\n"
		"                         what it takes (status: reservation)\n"
		"  --libvirt-uri URI      follow libvirt domains on URI (none: off)\n"
		"  --dbus ADDRESS|system|none\n"
		"                         serve org.vpmu.Broker1 on this bus (default system;\n"
		"                         a missing system bus is logged, not fatal)\n"
		"\n"
		"actions:\n"
		"  --print-pmu            print the PMU as Linux prints it at boot\n"
		"  --print-guest-pmu      print CPUID.0AH and the PMU a KVM guest would see\n"
		"  --list-models          list the built-in PMU models\n"
		"  --print-kvm            print the vPMU flavour KVM gives guests on this host,\n"
		"                         with the evidence read (/dev/kvm, sysfs, procfs), and\n"
		"                         what it means for guests and for host sessions\n"
		"  --help                 this text\n"
		"\n"
		"options:\n"
		"  --pmu MODEL|PATH|auto  a built-in model, a JSON model file (docs/pmu-models.md),\n"
		"                         or auto (default): this host, falling back to the\n"
		"                         built-in model " PMU_FALLBACK_MODEL " (simulated) when\n"
		"                         the host exposes no PMU\n"
		"  --gp N                 guest general counters (default: KVM's, at most 8 Intel / 6 AMD)\n"
		"  --fixed MASK           guest fixed counters, bit i = fixed counter i (default: KVM's)\n"
		"  --guest-version V      guest perfmon version (default: KVM's, at most 2)\n"
		"  --sysfs-root DIR       read sysfs below DIR instead of / (testing)\n"
		"  --procfs-root DIR      read procfs below DIR instead of / (testing)\n"
		"\n"
		"Whatever is printed for a model is simulated, not measured.\n");
}

/* Digits only (decimal or 0x hex): strtoul would otherwise take "-1" as a
 * huge number and " 3" as 3. */
static int parse_number(const char *s, unsigned long max, unsigned long *out)
{
	char *end;

	if (!s || !*s || *s == '-' || *s == '+' || *s == ' ')
		return -EINVAL;
	errno = 0;
	*out = strtoul(s, &end, 0);
	if (errno || *end || *out > max)
		return -EINVAL;
	return 0;
}

static int parse_args(int argc, char **argv, struct args *a)
{
	enum { OPT_PMU = 256, OPT_PRINT_PMU, OPT_PRINT_GUEST, OPT_LIST, OPT_PRINT_KVM, OPT_GP, OPT_FIXED,
	       OPT_GVER, OPT_SYSFS, OPT_PROCFS, OPT_CONFIG, OPT_SOCKET, OPT_STATE, OPT_KVM,
	       OPT_LIBVIRT, OPT_DBUS, OPT_KVM_RESERVE };
	static const struct option opts[] = {
		{ "pmu", required_argument, NULL, OPT_PMU },
		{ "print-pmu", no_argument, NULL, OPT_PRINT_PMU },
		{ "print-guest-pmu", no_argument, NULL, OPT_PRINT_GUEST },
		{ "list-models", no_argument, NULL, OPT_LIST },
		{ "print-kvm", no_argument, NULL, OPT_PRINT_KVM },
		{ "gp", required_argument, NULL, OPT_GP },
		{ "fixed", required_argument, NULL, OPT_FIXED },
		{ "guest-version", required_argument, NULL, OPT_GVER },
		{ "sysfs-root", required_argument, NULL, OPT_SYSFS },
		{ "procfs-root", required_argument, NULL, OPT_PROCFS },
		{ "config", required_argument, NULL, OPT_CONFIG },
		{ "socket", required_argument, NULL, OPT_SOCKET },
		{ "state-dir", required_argument, NULL, OPT_STATE },
		{ "kvm", required_argument, NULL, OPT_KVM },
		{ "kvm-reserve", required_argument, NULL, OPT_KVM_RESERVE },
		{ "libvirt-uri", required_argument, NULL, OPT_LIBVIRT },
		{ "dbus", required_argument, NULL, OPT_DBUS },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	unsigned long v;
	int c;

	memset(a, 0, sizeof(*a));
	opterr = 0; /* our messages name the option and point at --help */
	optind = 1;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		enum action act = ACT_NONE;

		switch (c) {
		case OPT_PMU:
			a->pmu = optarg;
			break;
		case OPT_PRINT_PMU:
			act = ACT_PRINT_PMU;
			break;
		case OPT_PRINT_GUEST:
			act = ACT_PRINT_GUEST;
			break;
		case OPT_LIST:
			act = ACT_LIST_MODELS;
			break;
		case OPT_PRINT_KVM:
			act = ACT_PRINT_KVM;
			break;
		case 'h':
			act = ACT_HELP;
			break;
		case OPT_GP:
			if (parse_number(optarg, PMU_MAX_GP, &v)) {
				fprintf(stderr, "vpmud: --gp %s: must be a number 0..%d\n", optarg, PMU_MAX_GP);
				return -EINVAL;
			}
			a->guest.num_gp = (unsigned)v;
			a->have_gp = true;
			break;
		case OPT_FIXED:
			if (parse_number(optarg, (1ul << PMU_MAX_FIXED) - 1, &v)) {
				fprintf(stderr, "vpmud: --fixed %s: must be a mask 0..0x%lx (bit i = fixed counter i)\n",
					optarg, (1ul << PMU_MAX_FIXED) - 1);
				return -EINVAL;
			}
			a->guest.fixed_mask = (uint32_t)v;
			a->have_fixed = true;
			break;
		case OPT_GVER:
			if (parse_number(optarg, 255, &v)) {
				fprintf(stderr, "vpmud: --guest-version %s: must be a number 0..255\n", optarg);
				return -EINVAL;
			}
			a->guest.version = (unsigned)v;
			a->have_version = true;
			break;
		case OPT_SYSFS:
			a->sysfs_root = optarg;
			break;
		case OPT_PROCFS:
			a->procfs_root = optarg;
			break;
		case OPT_CONFIG:
			a->daemon.config_path = optarg;
			break;
		case OPT_SOCKET:
			a->daemon.socket = optarg;
			break;
		case OPT_STATE:
			a->daemon.state_dir = optarg;
			break;
		case OPT_KVM:
			a->daemon.kvm = optarg;
			break;
		case OPT_KVM_RESERVE:
			if (strcmp(optarg, "uniform") && strcmp(optarg, "per-cpu")) {
				fprintf(stderr, "vpmud: --kvm-reserve %s: must be uniform or per-cpu\n", optarg);
				return -EINVAL;
			}
			a->daemon.kvm_reserve = optarg;
			break;
		case OPT_LIBVIRT:
			a->daemon.libvirt_uri = optarg;
			break;
		case OPT_DBUS:
			a->daemon.dbus = optarg;
			break;
		case ':':
			fprintf(stderr, "vpmud: %s needs a value (see --help)\n", argv[optind - 1]);
			return -EINVAL;
		default:
			fprintf(stderr, "vpmud: unknown option '%s' (see --help)\n", argv[optind - 1]);
			return -EINVAL;
		}
		if (act != ACT_NONE) {
			if (a->action != ACT_NONE && a->action != act) {
				fprintf(stderr, "vpmud: give one action only (see --help)\n");
				return -EINVAL;
			}
			a->action = act;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "vpmud: unexpected argument '%s' (see --help)\n", argv[optind]);
		return -EINVAL;
	}
	if ((a->have_gp || a->have_fixed || a->have_version) && a->action != ACT_PRINT_GUEST) {
		fprintf(stderr, "vpmud: --gp, --fixed and --guest-version go with --print-guest-pmu\n");
		return -EINVAL;
	}
	return 0;
}

static void print_origin(const struct pmu_desc *d, const char *spec)
{
	switch (d->source) {
	case PMU_SOURCE_BUILTIN:
		printf("# pmu: %s (built-in model, simulated)\n", d->model);
		break;
	case PMU_SOURCE_FILE:
		printf("# pmu: %s (model file %s, simulated)\n", d->model, spec);
		break;
	case PMU_SOURCE_HOST:
		printf("# pmu: host%s%s (read from this machine's CPUID and sysfs)\n",
		       d->pmu_name[0] ? " " : "", d->pmu_name);
		break;
	case PMU_SOURCE_NONE:
		printf("# pmu: none\n");
		break;
	}
}

/* Fills d with the PMU the daemon would manage and prints where it came
 * from. Returns an exit code. */
static int resolve_pmu(const struct args *a, struct pmu_desc *d)
{
	char msg[1024];
	int rc;

	if (a->pmu && strcmp(a->pmu, "auto") != 0) {
		rc = pmu_model_load(a->pmu, d, msg, sizeof(msg));
		if (rc) {
			fprintf(stderr, "vpmud: %s\n", msg[0] ? msg : strerror(-rc));
			return EXIT_USAGE;
		}
		print_origin(d, a->pmu);
		return 0;
	}

	struct pmu_discover_opts o = {
		.sysfs_root = a->sysfs_root ? a->sysfs_root : "/",
		.procfs_root = a->procfs_root ? a->procfs_root : "/",
		.use_cpuid = true,
		.msr_path = "/dev/cpu/0/msr",
	};
	rc = pmu_discover_host(&o, d, msg, sizeof(msg));
	if (rc) {
		fprintf(stderr, "vpmud: PMU discovery failed: %s\n", msg[0] ? msg : strerror(-rc));
		return EXIT_FAILURE;
	}
	if (d->source == PMU_SOURCE_HOST) {
		print_origin(d, NULL);
		if (msg[0])
			printf("# note: %s\n", msg);
		return 0;
	}
	printf("# pmu: this host exposes no PMU: %s\n", msg);
	printf("# pmu: the daemon falls back to built-in model %s (simulated)\n", PMU_FALLBACK_MODEL);
	rc = pmu_model_load(PMU_FALLBACK_MODEL, d, msg, sizeof(msg));
	if (rc) {
		fprintf(stderr, "vpmud: %s\n", msg);
		return EXIT_FAILURE;
	}
	print_origin(d, NULL);
	return 0;
}

static int print_block(const struct pmu_desc *d)
{
	char block[1024];
	int n = pmu_format_boot_block(d, block, sizeof(block));

	if (n < 0 || (size_t)n >= sizeof(block))
		return EXIT_FAILURE;
	fputs(block, stdout);
	return 0;
}

static int print_guest(const struct args *a, const struct pmu_desc *host)
{
	struct pmu_guest_shape shape;
	struct pmu_cpuid_regs regs;
	struct pmu_desc *g;
	char err[256];
	int rc;

	pmu_guest_default_shape(host, &shape);
	if (a->have_gp)
		shape.num_gp = a->guest.num_gp;
	if (a->have_fixed)
		shape.fixed_mask = a->guest.fixed_mask;
	if (a->have_version)
		shape.version = a->guest.version;

	rc = pmu_guest_cpuid(host, &shape, &regs, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "vpmud: guest PMU refused: %s\n", err);
		return EXIT_USAGE;
	}
	g = calloc(1, sizeof(*g));
	if (!g)
		return EXIT_FAILURE;
	rc = pmu_guest_desc(host, &regs, g);
	if (rc) {
		fprintf(stderr, "vpmud: cannot decode the guest CPUID: %s\n", strerror(-rc));
		free(g);
		return EXIT_FAILURE;
	}
	printf("# guest: version %u, %u general counters, fixed mask 0x%x%s\n", shape.version,
	       shape.num_gp, shape.fixed_mask,
	       a->have_gp || a->have_fixed || a->have_version ? "" : " (KVM perf-based vPMU defaults)");
	printf("%s: EAX=0x%08x EBX=0x%08x ECX=0x%08x EDX=0x%08x\n",
	       host->vendor == PMU_VENDOR_AMD ? "CPUID.80000022H" : "CPUID.0AH",
	       regs.eax, regs.ebx, regs.ecx, regs.edx);
	rc = print_block(g);
	free(g);
	return rc;
}

/* Detection as the daemon does it at start: this host's /dev/kvm, always
 * (fixture answers are for the unit tests only). A host without KVM is an
 * answer too ("unknown"), not a failure. */
static int print_kvm(const struct args *a)
{
	struct kvm_detect d;
	struct kvm_detect_opts o = { .sysfs_root = a->sysfs_root, .procfs_root = a->procfs_root };

	kvm_detect_run(&o, &d);
	int n = kvm_detect_format(&d, NULL, 0);
	if (n < 0)
		return EXIT_FAILURE;
	_cleanup_free_ char *report = malloc((size_t)n + 1);
	if (!report)
		return EXIT_FAILURE;
	kvm_detect_format(&d, report, (size_t)n + 1);
	if (a->sysfs_root || a->procfs_root)
		printf("# kvm: sysfs read below %s, procfs below %s (testing); ioctl answers from this host's /dev/kvm\n",
		       a->sysfs_root ? a->sysfs_root : "/", a->procfs_root ? a->procfs_root : "/");
	fputs(report, stdout);
	return 0;
}

int main(int argc, char **argv)
{
	struct args a;
	struct pmu_desc *d;
	int rc;

	if (parse_args(argc, argv, &a))
		return EXIT_USAGE;
	switch (a.action) {
	case ACT_HELP:
		usage(stdout);
		return 0;
	case ACT_LIST_MODELS:
		for (const char *const *n = pmu_model_builtin_names(); *n; n++)
			printf("%s%s\n", *n,
			       strcmp(*n, PMU_FALLBACK_MODEL) == 0 ? " (fallback when the host has no PMU)" : "");
		return 0;
	case ACT_PRINT_KVM:
		return print_kvm(&a);
	case ACT_NONE:
		a.daemon.pmu = a.pmu;
		a.daemon.sysfs_root = a.sysfs_root;
		a.daemon.procfs_root = a.procfs_root;
		return vpmud_run(&a.daemon);
	case ACT_PRINT_PMU:
	case ACT_PRINT_GUEST:
		break;
	}

	/* A description is tens of KiB (the CPU inventory): keep it off the
	 * stack. */
	d = calloc(1, sizeof(*d));
	if (!d)
		return EXIT_FAILURE;
	rc = resolve_pmu(&a, d);
	if (rc == 0)
		rc = a.action == ACT_PRINT_PMU ? print_block(d) : print_guest(&a, d);
	free(d);
	return rc;
}
