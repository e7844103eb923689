/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>

#include "cibroker/cli.h"

int cmd_keygen(int argc, char **argv)
{
	fprintf(stderr, "cibroker keygen: not implemented yet\n");
	return 1;
}
