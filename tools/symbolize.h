/*
 * symbolize.h - addresses of a running process to function names, from
 * outside it: /proc/PID/maps plus the ELF symbol tables of the mapped
 * files (.symtab, else a separate debug file found by build id, else
 * .dynsym), with the source file and line from the DWARF line table
 * where there is one (dwarfline.h).  Used by evdump and by a worker's
 * /debug/pprof handler.
 */
#ifndef EVENTODB_SYMBOLIZE_H
#define EVENTODB_SYMBOLIZE_H

#include <stdint.h>
#include <sys/types.h>

struct sym_ctx;

/* An executable mapping of some process. */
struct sym_map {
	uint64_t	 start, limit, offset;
	char		*path;		/* file name, or "[vdso]" etc. (" (deleted)" removed) */
	char		*open_path;	/* where to read it: /proc/PID/exe for the program,
					   which works even after the file was replaced */
	char		 build_id[41];	/* lowercase hex, "" if none */
	int		 is_main;	/* the program itself */
	unsigned	 id;		/* 1-based, in order of addition */
	struct sym_elf	*elf;		/* loaded on first lookup */
	int		 elf_tried;
};

struct sym_frame {
	const char	*func;		/* NULL: unknown (use the mapping's name) */
	uint64_t	 func_addr;	/* start of the function (run-time address) */
	const struct sym_map *map;	/* NULL: in no known mapping */
	const char	*file;		/* source of the address (DWARF line table), or NULL */
	unsigned	 line;
	const char	*func_file;	/* source of the function's first instruction */
	unsigned	 func_line;
};

struct sym_ctx *sym_open(void);
void sym_close(struct sym_ctx *s);

/*
 * Add the executable mappings of a process (mappings already known, as
 * those of sibling workers forked from one master, are not added twice).
 * Returns 0, or -1 when /proc/PID/maps cannot be read (errno set).
 */
int sym_add_pid(struct sym_ctx *s, pid_t pid);

/* Symbolise one address (a return address already minus one). */
void sym_lookup(struct sym_ctx *s, uint64_t addr, struct sym_frame *out);

/* The mappings, for the profile's mapping table. */
unsigned sym_nmaps(const struct sym_ctx *s);
const struct sym_map *sym_map_at(const struct sym_ctx *s, unsigned i);

#endif
