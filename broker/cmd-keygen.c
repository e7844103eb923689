/* SPDX-License-Identifier: Apache-2.0 */
/* `cibroker keygen --out FILE`: a new ES256 signing key for signing.keys. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cibroker/cli.h"
#include "cibroker/err.h"
#include "cibroker/keys.h"

static void keygen_usage(FILE *out)
{
	fprintf(out, "usage: cibroker keygen --out FILE\n"
		     "\n"
		     "Create a new ES256 (EC P-256) signing key as PKCS#8 PEM in FILE, mode 0600.\n"
		     "An existing FILE is never overwritten. Prints the key's kid (its RFC 7638\n"
		     "thumbprint, as published in /.well-known/jwks.json) on stdout.\n"
		     "\n"
		     "options:\n"
		     "  --out FILE   where to write the key (must not exist)\n"
		     "  --help       show this help\n"
		     "  --version    show the version\n");
}

int cmd_keygen(int argc, char **argv)
{
	const char *out = NULL;
	char kid[44];
	enum broker_err err;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			keygen_usage(stdout);
			return 0;
		}
		if (strcmp(a, "--version") == 0) {
			cli_print_version();
			return 0;
		}
		if (strcmp(a, "--out") == 0 || strcmp(a, "-o") == 0) {
			if (i + 1 >= argc) {
				fprintf(stderr, "cibroker keygen: %s needs a FILE\n", a);
				return 2;
			}
			a = argv[++i];
		} else if (strncmp(a, "--out=", 6) == 0) {
			a += 6;
		} else {
			fprintf(stderr, "cibroker keygen: unexpected argument '%s'\n", a);
			keygen_usage(stderr);
			return 2;
		}
		if (out) {
			fprintf(stderr, "cibroker keygen: --out given twice\n");
			return 2;
		}
		if (!*a) {
			fprintf(stderr, "cibroker keygen: --out needs a non-empty FILE\n");
			return 2;
		}
		out = a;
	}
	if (!out) {
		fprintf(stderr, "cibroker keygen: --out FILE is required\n");
		keygen_usage(stderr);
		return 2;
	}

	errno = 0;
	err = signing_key_generate_file(out, kid);
	if (err == BROKER_ERR_IO && errno == EEXIST) {
		fprintf(stderr, "cibroker keygen: %s already exists; refusing to overwrite it\n", out);
		return 1;
	}
	if (err == BROKER_ERR_IO && errno) {
		fprintf(stderr, "cibroker keygen: cannot write %s: %s\n", out, strerror(errno));
		return 1;
	}
	if (err != BROKER_OK) {
		fprintf(stderr, "cibroker keygen: cannot create a key in %s: %s\n", out, broker_strerror(err));
		return 1;
	}
	printf("%s\n", kid);
	if (fflush(stdout) != 0)
		return 1;
	fprintf(stderr, "wrote %s (ES256, mode 0600); add it to signing.keys\n", out);
	return 0;
}
