/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>

#include "cibroker/cli.h"

int cmd_policy(int argc, char **argv)
{
	fprintf(stderr, "cibroker policy: not implemented yet\n");
	return 1;
}
