/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>

#include "cibroker/cli.h"

int cmd_exchange(int argc, char **argv)
{
	fprintf(stderr, "cibroker exchange: not implemented yet\n");
	return 1;
}
