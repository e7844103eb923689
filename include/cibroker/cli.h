/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Subcommands of the cibroker binary. argv[0] is the subcommand name.
 * Exit codes: 0 ok, 1 failure (check failed, refused config), 2 usage. */
int cmd_serve(int argc, char **argv);
int cmd_dev(int argc, char **argv);
int cmd_policy(int argc, char **argv);
int cmd_keygen(int argc, char **argv);
int cmd_audit(int argc, char **argv);
int cmd_exchange(int argc, char **argv);

/* Shared by subcommands for --version. */
void cli_print_version(void);
