/* SPDX-License-Identifier: Apache-2.0 */
/* cibroker audit verify [--strict] FILE...: check audit hash chains. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "cibroker/audit.h"
#include "cibroker/cli.h"

static void usage(FILE *out)
{
	fprintf(out,
		"usage: cibroker audit verify [--strict] FILE...\n"
		"\n"
		"Check the hash chain of audit log FILE (\"-\" reads standard input): every\n"
		"line must be a JSON record whose \"prev\" is the SHA-256 of the line before\n"
		"it (64 zeros on the first line).\n"
		"\n"
		"  --strict    also fail on a record cut short by a crash (torn record),\n"
		"              which is otherwise reported on stderr and accepted\n"
		"  --help      show this help\n"
		"  --version   show the version\n"
		"\n"
		"Prints \"FILE: N records, chain intact\" and exits 0, or prints\n"
		"\"FILE:LINE: chain broken at line LINE: REASON\" for the first bad line and exits 1.\n"
		"Exit 2 on usage errors.\n");
}

static void usage_error(const char *what, const char *arg)
{
	if (arg)
		fprintf(stderr, "cibroker audit: %s '%s'\n", what, arg);
	else
		fprintf(stderr, "cibroker audit: %s\n", what);
	fprintf(stderr, "usage: cibroker audit verify [--strict] FILE...  (--help for more)\n");
}

static void report_torn(uint64_t line, void *userdata)
{
	fprintf(stderr, "%s:%llu: torn record (crash), chain intact\n", (const char *)userdata,
		(unsigned long long)line);
}

static int verify_one(const char *path, bool strict)
{
	struct audit_verify_report r;
	enum broker_err err;
	int saved;
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "re");

	if (!f) {
		fprintf(stderr, "cibroker audit: %s: %s\n", path, strerror(errno));
		return 1;
	}
	errno = 0;
	err = audit_verify_stream(f, strict, report_torn, (void *)path, &r);
	saved = errno; /* a read error's cause (EISDIR for a directory) */
	if (f != stdin)
		fclose(f);
	if (err != BROKER_OK) {
		fprintf(stderr, "cibroker audit: %s: %s\n", path,
			err == BROKER_ERR_IO && saved ? strerror(saved) : broker_strerror(err));
		return 1;
	}
	if (r.bad_line) {
		printf("%s:%llu: chain broken at line %llu: %s\n", path, (unsigned long long)r.bad_line,
		       (unsigned long long)r.bad_line, r.reason);
		return 1;
	}
	if (r.torn)
		printf("%s: %llu records, %llu torn (crash), chain intact\n", path, (unsigned long long)r.records,
		       (unsigned long long)r.torn);
	else
		printf("%s: %llu records, chain intact\n", path, (unsigned long long)r.records);
	return 0;
}

static int cmd_verify(int argc, char **argv)
{
	bool strict = false, opts = true;
	int files = 0, rc = 0;

	for (int i = 1; i < argc; i++) {
		if (opts && strcmp(argv[i], "--") == 0) {
			opts = false;
		} else if (opts && (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)) {
			usage(stdout);
			return 0;
		} else if (opts && strcmp(argv[i], "--version") == 0) {
			cli_print_version();
			return 0;
		} else if (opts && strcmp(argv[i], "--strict") == 0) {
			strict = true;
		} else if (opts && argv[i][0] == '-' && argv[i][1] != '\0') {
			usage_error("unknown option", argv[i]);
			return 2;
		} else {
			files++;
		}
	}
	if (!files) {
		usage_error("FILE required", NULL);
		return 2;
	}
	/* Same walk as above: every non-option argument is a file. */
	opts = true;
	for (int i = 1; i < argc; i++) {
		if (opts && strcmp(argv[i], "--") == 0) {
			opts = false;
			continue;
		}
		if (opts && argv[i][0] == '-' && argv[i][1] != '\0')
			continue;
		if (verify_one(argv[i], strict) != 0)
			rc = 1;
	}
	fflush(stdout);
	return rc;
}

int cmd_audit(int argc, char **argv)
{
	if (argc < 2) {
		usage_error("subcommand required", NULL);
		return 2;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(argv[1], "--version") == 0) {
		cli_print_version();
		return 0;
	}
	if (strcmp(argv[1], "verify") == 0)
		return cmd_verify(argc - 1, argv + 1);
	usage_error("unknown subcommand", argv[1]);
	return 2;
}
