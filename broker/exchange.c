/* SPDX-License-Identifier: Apache-2.0 */
/* Not yet written: placeholder so the build graph is complete. */
