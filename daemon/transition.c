/* SPDX-License-Identifier: MIT */
#include "transition.h"

const char *pmc_route_name(enum pmc_route r)
{
	switch (r) {
	case PMC_ROUTE_DISABLED: return "disabled";
	case PMC_ROUTE_MULTIPLEXED: return "multiplexed";
	case PMC_ROUTE_PASSTHROUGH: return "passthrough";
	}
	return "unknown";
}
