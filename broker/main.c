/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <string.h>

#include "cibroker/cli.h"

static const struct {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *summary;
} commands[] = {
	{"serve", cmd_serve, "run the broker (--config FILE)"},
	{"dev", cmd_dev, "run a self-contained broker with a dev issuer, for trying it out"},
	{"policy", cmd_policy, "check, test and explain policies"},
	{"keygen", cmd_keygen, "create a new ES256 signing key"},
	{"audit", cmd_audit, "verify an audit log's hash chain"},
	{"exchange", cmd_exchange, "CI side: trade this job's ID token for a credential"},
};

void cli_print_version(void)
{
	printf("cibroker %s\n", CIBROKER_VERSION);
}

static void usage(FILE *out)
{
	fprintf(out, "usage: cibroker COMMAND [OPTIONS]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
	fprintf(out, "\nRun 'cibroker COMMAND --help' for a command's options.\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
		cli_print_version();
		return 0;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(argv[1], commands[i].name) == 0)
			return commands[i].run(argc - 1, argv + 1);
	fprintf(stderr, "cibroker: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
