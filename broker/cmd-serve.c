/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>

#include "cibroker/cli.h"

int cmd_serve(int argc, char **argv)
{
	fprintf(stderr, "cibroker serve: not implemented yet\n");
	return 1;
}

int cmd_dev(int argc, char **argv)
{
	fprintf(stderr, "cibroker dev: not implemented yet\n");
	return 1;
}
