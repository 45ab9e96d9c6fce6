/*
 * dwarfline.h - source file and line of an address from the DWARF line
 * table (.debug_line) of an ELF image mapped in memory.  Used by
 * symbolize.c for the file and line of each location of a profile.
 */
#ifndef EVENTODB_DWARFLINE_H
#define EVENTODB_DWARFLINE_H

#include <stddef.h>
#include <stdint.h>

struct dwl_table;

/* The line table of an ELF64 image; NULL when it has none. */
struct dwl_table *dwl_load(const void *base, size_t len);

/* File and line of a link-time address: 0, or -1 when not covered. */
int dwl_lookup(const struct dwl_table *t, uint64_t vaddr, const char **file, unsigned *line);

void dwl_free(struct dwl_table *t);

#endif
