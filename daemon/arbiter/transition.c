/* SPDX-License-Identifier: MIT */
#include "arbiter/transition.h"

const char *transition_route_name(enum pmc_route r)
{
	switch (r) {
	case PMC_ROUTE_DISABLED: return "disabled";
	case PMC_ROUTE_MULTIPLEXED: return "multiplexed";
	case PMC_ROUTE_PASSTHROUGH: return "passthrough";
	case PMC_ROUTE_RESERVED: return "reserved";
	case PMC_ROUTE_AT_RISK: return "at-risk";
	case PMC_ROUTE_UNMANAGED: return "unmanaged";
	}
	return "unknown";
}
