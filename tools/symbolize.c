/*
 * symbolize.c - function names for the addresses of another process.
 *
 * For an address a in an executable mapping [start, limit) at file
 * offset `offset` of file F (/proc/PID/maps):
 *   file_off = a - start + offset;
 *   the PT_LOAD segment of F with p_offset <= file_off < p_offset +
 *   p_filesz gives vaddr = file_off - p_offset + p_vaddr;
 *   the function is the symbol of F with st_value <= vaddr < st_value +
 *   st_size (binary search in the sorted table).
 * Symbols come from .symtab when F has one (our own binary, unless
 * stripped), else from a debug file named by F's build id under
 * /usr/lib/debug/.build-id/, else from .dynsym (exported functions only,
 * as Debian's libraries ship).  Files are mapped read-only and parsed by
 * hand (<elf.h>); only ELF64 little-endian is understood.
 *
 * Reading another process's maps needs the same uid or root (ptrace
 * read access); prefork workers share their master's layout, so the
 * mappings of all workers of an instance are normally the same.
 */
#include "config.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dwarfline.h"
#include "symbolize.h"

struct sym_ent {
	uint64_t	 addr;
	uint64_t	 size;
	const char	*name;
	int		 rank;		/* lower wins among aliases */
};

struct sym_load {
	uint64_t	 offset, vaddr, filesz;
};

struct sym_elf {
	void		*base;		/* mapping of the file */
	size_t		 len;
	uint64_t	*fde;		/* function starts from .eh_frame_hdr (vaddr), sorted */
	size_t		 nfde;
	void		*dbg_base;	/* mapping of the debug file, if used */
	size_t		 dbg_len;
	struct sym_load	 load[16];
	int		 nload;
	struct sym_ent	*syms;
	size_t		 nsyms;
	struct dwl_table *lines;	/* .debug_line, loaded on the first lookup */
	int		 lines_tried;
};

struct sym_ctx {
	struct sym_map	*maps;
	unsigned	 nmaps, cap;
	char		 namebuf[320];	/* synthesised names ("libx.so+0x1f30") */
};

static int
map_file(const char *path, void **base, size_t *len)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	void *p;

	if (fd < 0)
		return -1;
	if (fstat(fd, &st) < 0 || st.st_size < (off_t)sizeof(Elf64_Ehdr)) {
		close(fd);
		return -1;
	}
	p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (p == MAP_FAILED)
		return -1;
	*base = p;
	*len = (size_t)st.st_size;
	return 0;
}

static const Elf64_Ehdr *
elf_header(const void *base, size_t len)
{
	const Elf64_Ehdr *eh = base;

	if (len < sizeof(*eh) || memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 ||
	    eh->e_ident[EI_CLASS] != ELFCLASS64 || eh->e_ident[EI_DATA] != ELFDATA2LSB)
		return NULL;
	if (eh->e_phoff > len || eh->e_phnum > (len - eh->e_phoff) / sizeof(Elf64_Phdr))
		return NULL;
	if (eh->e_shoff > len || eh->e_shnum > (len - eh->e_shoff) / sizeof(Elf64_Shdr))
		return NULL;
	return eh;
}

static int
sym_cmp(const void *a, const void *b)
{
	const struct sym_ent *x = a, *y = b;

	if (x->addr != y->addr)
		return x->addr < y->addr ? -1 : 1;
	if (x->rank != y->rank)
		return x->rank - y->rank;
	return strcmp(x->name, y->name);
}

/* Add the function symbols of section type `type` (SHT_SYMTAB/SHT_DYNSYM); count added. */
static size_t
read_symbols(struct sym_elf *e, const void *base, size_t len, unsigned type)
{
	const Elf64_Ehdr *eh = elf_header(base, len);
	const Elf64_Shdr *sh;
	size_t added = 0;

	if (!eh)
		return 0;
	sh = (const Elf64_Shdr *)((const char *)base + eh->e_shoff);
	for (unsigned i = 0; i < eh->e_shnum; i++) {
		const Elf64_Shdr *ss = &sh[i], *strs;
		const Elf64_Sym *sy;
		size_t n;
		struct sym_ent *grown;

		if (ss->sh_type != type || ss->sh_link >= eh->e_shnum || ss->sh_entsize != sizeof(Elf64_Sym))
			continue;
		strs = &sh[ss->sh_link];
		if (ss->sh_offset > len || ss->sh_size > len - ss->sh_offset ||
		    strs->sh_offset > len || strs->sh_size > len - strs->sh_offset)
			continue;
		n = ss->sh_size / sizeof(Elf64_Sym);
		grown = realloc(e->syms, (e->nsyms + n) * sizeof(*e->syms));
		if (!grown)
			return added;
		e->syms = grown;
		sy = (const Elf64_Sym *)((const char *)base + ss->sh_offset);
		for (size_t k = 0; k < n; k++) {
			unsigned t = ELF64_ST_TYPE(sy[k].st_info), b = ELF64_ST_BIND(sy[k].st_info);
			const char *name;

			if ((t != STT_FUNC && t != STT_GNU_IFUNC) || sy[k].st_value == 0 ||
			    sy[k].st_shndx == SHN_UNDEF || sy[k].st_name >= strs->sh_size)
				continue;
			name = (const char *)base + strs->sh_offset + sy[k].st_name;
			if (!*name || !memchr(name, '\0', strs->sh_size - sy[k].st_name) ||
			    strchr(name, '@'))
				continue;	/* versioned duplicates ("f@@GLIBC_2.34") of plain names */
			e->syms[e->nsyms++] = (struct sym_ent){ sy[k].st_value, sy[k].st_size, name,
			    b == STB_GLOBAL ? 0 : b == STB_WEAK ? 1 : 2 };
			added++;
		}
	}
	return added;
}

static void
read_build_id(const void *base, size_t len, char *out)
{
	const Elf64_Ehdr *eh = elf_header(base, len);
	const Elf64_Phdr *ph;

	out[0] = '\0';
	if (!eh)
		return;
	ph = (const Elf64_Phdr *)((const char *)base + eh->e_phoff);
	for (unsigned i = 0; i < eh->e_phnum; i++) {
		const char *p, *end;

		if (ph[i].p_type != PT_NOTE || ph[i].p_offset > len || ph[i].p_filesz > len - ph[i].p_offset)
			continue;
		p = (const char *)base + ph[i].p_offset;
		end = p + ph[i].p_filesz;
		while (p + sizeof(Elf64_Nhdr) <= end) {
			const Elf64_Nhdr *nh = (const Elf64_Nhdr *)p;
			const char *name = p + sizeof(*nh);
			const unsigned char *desc = (const unsigned char *)name + ((nh->n_namesz + 3) & ~3u);

			if ((const char *)desc + nh->n_descsz > end)
				break;
			if (nh->n_type == NT_GNU_BUILD_ID && nh->n_namesz == 4 &&
			    memcmp(name, "GNU", 4) == 0 && nh->n_descsz <= 20) {
				for (unsigned k = 0; k < nh->n_descsz; k++)
					sprintf(out + 2 * k, "%02x", desc[k]);
				return;
			}
			p = (const char *)desc + ((nh->n_descsz + 3) & ~3u);
		}
	}
}

/*
 * Function start addresses from the binary search table of
 * .eh_frame_hdr (PT_GNU_EH_FRAME): they name the functions a stripped
 * library keeps no symbol for ("libevent-2.1.so.7.0.1+0x1f30"), so that
 * its internal functions stay apart in a profile.  Only the encoding
 * every toolchain here emits is understood: version 1, a 4-byte
 * eh_frame_ptr, fde_count udata4, table datarel|sdata4.
 */
static void
read_fde_starts(struct sym_elf *e, const Elf64_Phdr *ph)
{
	const unsigned char *h;
	uint32_t count;

	if (ph->p_offset > e->len || ph->p_filesz > e->len - ph->p_offset || ph->p_filesz < 12)
		return;
	h = (const unsigned char *)e->base + ph->p_offset;
	if (h[0] != 1 || (h[1] & 0x0f) == 0x00 || h[2] != 0x03 || h[3] != 0x3b ||
	    ((h[1] & 0x0f) != 0x03 && (h[1] & 0x0f) != 0x0b))
		return;
	memcpy(&count, h + 8, 4);
	if (count == 0 || (uint64_t)count * 8 > ph->p_filesz - 12)
		return;
	e->fde = malloc((size_t)count * sizeof(*e->fde));
	if (!e->fde)
		return;
	for (uint32_t i = 0; i < count; i++) {
		int32_t loc;
		memcpy(&loc, h + 12 + (size_t)i * 8, 4);
		e->fde[i] = (uint64_t)((int64_t)ph->p_vaddr + loc);
	}
	e->nfde = count;
}

static struct sym_elf *
elf_load(struct sym_map *m)
{
	struct sym_elf *e = calloc(1, sizeof(*e));
	const Elf64_Ehdr *eh;
	const Elf64_Phdr *ph;

	if (!e)
		return NULL;
	if ((map_file(m->open_path, &e->base, &e->len) < 0 &&
	    (m->path[0] != '/' || map_file(m->path, &e->base, &e->len) < 0)) ||
	    !(eh = elf_header(e->base, e->len))) {
		if (e->base)
			munmap(e->base, e->len);
		free(e);
		return NULL;
	}
	ph = (const Elf64_Phdr *)((const char *)e->base + eh->e_phoff);
	for (unsigned i = 0; i < eh->e_phnum; i++) {
		if (ph[i].p_type == PT_LOAD && e->nload < 16)
			e->load[e->nload++] = (struct sym_load){ ph[i].p_offset, ph[i].p_vaddr, ph[i].p_filesz };
		else if (ph[i].p_type == PT_GNU_EH_FRAME && !e->fde)
			read_fde_starts(e, &ph[i]);
	}
	read_build_id(e->base, e->len, m->build_id);

	if (read_symbols(e, e->base, e->len, SHT_SYMTAB) == 0) {
		char dbg[128];

		if (strlen(m->build_id) > 2) {
			snprintf(dbg, sizeof(dbg), "/usr/lib/debug/.build-id/%.2s/%s.debug",
			    m->build_id, m->build_id + 2);
			if (map_file(dbg, &e->dbg_base, &e->dbg_len) == 0 &&
			    read_symbols(e, e->dbg_base, e->dbg_len, SHT_SYMTAB) == 0) {
				munmap(e->dbg_base, e->dbg_len);
				e->dbg_base = NULL;
			}
		}
		if (e->nsyms == 0)
			read_symbols(e, e->base, e->len, SHT_DYNSYM);
	}
	if (e->nsyms)
		qsort(e->syms, e->nsyms, sizeof(*e->syms), sym_cmp);
	return e;
}

static void
elf_free(struct sym_elf *e)
{
	if (!e)
		return;
	free(e->syms);
	free(e->fde);
	dwl_free(e->lines);
	if (e->dbg_base)
		munmap(e->dbg_base, e->dbg_len);
	munmap(e->base, e->len);
	free(e);
}

struct sym_ctx *
sym_open(void)
{
	return calloc(1, sizeof(struct sym_ctx));
}

void
sym_close(struct sym_ctx *s)
{
	if (!s)
		return;
	for (unsigned i = 0; i < s->nmaps; i++) {
		elf_free(s->maps[i].elf);
		free(s->maps[i].path);
		free(s->maps[i].open_path);
	}
	free(s->maps);
	free(s);
}

int
sym_add_pid(struct sym_ctx *s, pid_t pid)
{
	char path[64], exe[4096], line[4608];
	FILE *f;
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/%d/exe", (int)pid);
	n = readlink(path, exe, sizeof(exe) - 1);
	exe[n > 0 ? n : 0] = '\0';
	snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long start, end, off;
		char perms[8];
		int pos = 0;
		const char *file;
		unsigned i;
		int is_main, deleted = 0;

		if (sscanf(line, "%llx-%llx %7s %llx %*s %*s %n", &start, &end, perms, &off, &pos) < 4 ||
		    pos == 0 || perms[2] != 'x')
			continue;
		file = line + pos;
		line[strcspn(line, "\n")] = '\0';
		if (!*file)
			continue;	/* anonymous executable memory */
		is_main = exe[0] && strcmp(exe, file) == 0;
		/* A file replaced since it was mapped (a rebuild, an upgrade). */
		n = (ssize_t)strlen(file);
		if (n > 10 && strcmp(file + n - 10, " (deleted)") == 0) {
			line[pos + n - 10] = '\0';
			deleted = 1;
		}
		for (i = 0; i < s->nmaps; i++)
			if (s->maps[i].start == start && s->maps[i].limit == end &&
			    strcmp(s->maps[i].path, file) == 0)
				break;
		if (i < s->nmaps)
			continue;
		if (s->nmaps == s->cap) {
			unsigned cap = s->cap ? s->cap * 2 : 32;
			struct sym_map *m = realloc(s->maps, cap * sizeof(*m));
			if (!m)
				break;
			s->maps = m;
			s->cap = cap;
		}
		memset(&s->maps[s->nmaps], 0, sizeof(s->maps[0]));
		s->maps[s->nmaps].start = start;
		s->maps[s->nmaps].limit = end;
		s->maps[s->nmaps].offset = off;
		s->maps[s->nmaps].path = strdup(file);
		s->maps[s->nmaps].is_main = is_main;
		s->maps[s->nmaps].id = s->nmaps + 1;
		if (is_main)
			snprintf(path, sizeof(path), "/proc/%d/exe", (int)pid);
		else if (deleted)	/* needs CAP_SYS_ADMIN; else the new file by name */
			snprintf(path, sizeof(path), "/proc/%d/map_files/%llx-%llx", (int)pid, start, end);
		else
			snprintf(path, sizeof(path), "%s", file);
		s->maps[s->nmaps].open_path = strdup(path);
		if (!s->maps[s->nmaps].path || !s->maps[s->nmaps].open_path) {
			free(s->maps[s->nmaps].path);
			free(s->maps[s->nmaps].open_path);
			break;
		}
		s->nmaps++;
	}
	fclose(f);
	return 0;
}

static int sym_find(const struct sym_elf *e, uint64_t vaddr, const char **name, uint64_t *start);
static struct dwl_table *elf_lines(struct sym_elf *e, const struct sym_map *m);
static int fde_find(const struct sym_elf *e, uint64_t vaddr, uint64_t *start);

void
sym_lookup(struct sym_ctx *s, uint64_t addr, struct sym_frame *out)
{
	struct sym_map *m = NULL;
	struct sym_elf *e;
	uint64_t file_off, vaddr = 0, sym_addr = 0;
	int k;

	out->func = NULL;
	out->func_addr = 0;
	out->map = NULL;
	out->file = out->func_file = NULL;
	out->line = out->func_line = 0;
	for (unsigned i = 0; i < s->nmaps; i++)
		if (addr >= s->maps[i].start && addr < s->maps[i].limit) {
			m = &s->maps[i];
			break;
		}
	if (!m)
		return;
	out->map = m;
	if (!m->elf_tried) {
		m->elf_tried = 1;
		m->elf = elf_load(m);
	}
	e = m->elf;
	if (!e)
		return;
	file_off = addr - m->start + m->offset;
	for (k = 0; k < e->nload; k++)
		if (file_off >= e->load[k].offset && file_off < e->load[k].offset + e->load[k].filesz) {
			vaddr = file_off - e->load[k].offset + e->load[k].vaddr;
			break;
		}
	if (k == e->nload)
		return;
	if (sym_find(e, vaddr, &out->func, &sym_addr) < 0 && fde_find(e, vaddr, &sym_addr) == 0) {
		const char *b = strrchr(m->path, '/');
		snprintf(s->namebuf, sizeof(s->namebuf), "%s+0x%llx", b ? b + 1 : m->path,
		    (unsigned long long)sym_addr);
		out->func = s->namebuf;
	}
	if (!out->func)
		return;
	out->func_addr = sym_addr - e->load[k].vaddr + e->load[k].offset - m->offset + m->start;
	/*
	 * Lines of the program only: the libraries' (from Debian's debug
	 * files when installed) cost 0.2 s and 12 MB to load and name lines
	 * in glibc's sources, while their function names already say where
	 * the time went.
	 */
	if (!e->lines_tried && m->is_main) {
		e->lines_tried = 1;
		e->lines = elf_lines(e, m);
	}
	if (e->lines && dwl_lookup(e->lines, vaddr, &out->file, &out->line) == 0 &&
	    dwl_lookup(e->lines, sym_addr, &out->func_file, &out->func_line) < 0)
		out->func_file = out->file;	/* the entry not covered: trust the address */
}

/* The line table: of the file itself, else of its debug file by build id. */
static struct dwl_table *
elf_lines(struct sym_elf *e, const struct sym_map *m)
{
	struct dwl_table *t = dwl_load(e->base, e->len);

	if (t)
		return t;
	if (!e->dbg_base && strlen(m->build_id) > 2) {
		char dbg[128];

		snprintf(dbg, sizeof(dbg), "/usr/lib/debug/.build-id/%.2s/%s.debug", m->build_id,
		    m->build_id + 2);
		if (map_file(dbg, &e->dbg_base, &e->dbg_len) < 0)
			e->dbg_base = NULL;
	}
	return e->dbg_base ? dwl_load(e->dbg_base, e->dbg_len) : NULL;
}

/* The function symbol covering vaddr: 0 with name and start, or -1. */
static int
sym_find(const struct sym_elf *e, uint64_t vaddr, const char **name, uint64_t *start)
{
	size_t lo, hi;

	if (!e->nsyms)
		return -1;
	/* Last symbol with addr <= vaddr; among aliases the first (best rank). */
	lo = 0;
	hi = e->nsyms;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (e->syms[mid].addr <= vaddr)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0)
		return -1;
	lo--;
	while (lo > 0 && e->syms[lo - 1].addr == e->syms[lo].addr)
		lo--;
	{
		const struct sym_ent *se = &e->syms[lo];
		size_t j = lo;

		/* An alias with a size covers it if the first does not. */
		while (se->size && vaddr >= se->addr + se->size && j + 1 < e->nsyms &&
		    e->syms[j + 1].addr == se->addr)
			se = &e->syms[++j];
		if (se->size && vaddr >= se->addr + se->size)
			return -1;
		*name = se->name;
		*start = se->addr;
	}
	return 0;
}

/* The start of the function (from the unwind table) containing vaddr: 0, or -1. */
static int
fde_find(const struct sym_elf *e, uint64_t vaddr, uint64_t *start)
{
	size_t lo = 0, hi = e->nfde;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (e->fde[mid] <= vaddr)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0)
		return -1;
	*start = e->fde[lo - 1];
	return 0;
}

unsigned
sym_nmaps(const struct sym_ctx *s)
{
	return s->nmaps;
}

const struct sym_map *
sym_map_at(const struct sym_ctx *s, unsigned i)
{
	if (i < s->nmaps) {
		struct sym_map *m = &((struct sym_ctx *)s)->maps[i];
		/* The build id is read with the file. */
		if (!m->elf_tried) {
			m->elf_tried = 1;
			m->elf = elf_load(m);
		}
		return m;
	}
	return NULL;
}
