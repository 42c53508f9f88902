// image_cost: what it would cost spice-server to send a GL scanout to a new
// client as a lossless 2D image (QUIC / LZ / GLZ SpiceImage in a DRAW_COPY)
// instead of a video stream frame.  Compression goes through spice-server's
// own image_encoders_compress_*() (as dcc_compress_image() calls them),
// decoding through spice-common's quic/lz decoders (as canvas_base.c calls
// them).  Usage: image_cost OUT.json [--runs N] [--glz-window PIXELS]
#include <config.h>

#include <glib.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <vector>

#include <common/lz.h>
#include <common/quic.h>

#include "image-encoders.h"
#include "red-parse-qxl.h"
#include "spice-bitmap-utils.h"

// ---------------------------------------------------------------- timing

struct Clock {
    timespec w0, c0;
    void start() { clock_gettime(CLOCK_MONOTONIC, &w0); clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0); }
    static double ms(const timespec &a, const timespec &b) {
        return (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6;
    }
    // (wall ms, thread CPU ms) since start()
    std::pair<double, double> stop() {
        timespec w1, c1;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
        clock_gettime(CLOCK_MONOTONIC, &w1);
        return {ms(w0, w1), ms(c0, c1)};
    }
};

static double median(std::vector<double> v)
{
    if (v.empty()) return -1;
    std::sort(v.begin(), v.end());
    size_t n = v.size();
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// ---------------------------------------------------------------- pictures
// As python/spice_initial_draw/patterns.py: XRGB8888, bytes B,G,R,0xFF,
// top-down rows, stride = 4 * width.

struct Rgb { uint8_t r, g, b; };

static inline void put(uint8_t *p, Rgb c) { p[0] = c.b; p[1] = c.g; p[2] = c.r; p[3] = 0xFF; }

static std::vector<uint8_t> make_picture(const std::string &name, int w, int h)
{
    std::vector<uint8_t> d(size_t(w) * h * 4);
    if (name == "quadrants") {          // red, green / blue, white
        const Rgb q[4] = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}, {255, 255, 255}};
        int hw = w / 2, hh = h / 2;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                put(&d[(size_t(y) * w + x) * 4], q[(y >= hh) * 2 + (x >= hw)]);
    } else if (name == "bars") {        // 8 vertical bars
        const Rgb c[8] = {{255, 255, 255}, {255, 255, 0}, {0, 255, 255}, {0, 255, 0},
                          {255, 0, 255}, {255, 0, 0}, {0, 0, 255}, {0, 0, 0}};
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                put(&d[(size_t(y) * w + x) * 4], c[std::min(int(int64_t(x) * 8 / w), 7)]);
    } else {                            // "noise": uniform random RGB, X = 0xFF
        uint64_t s = 1000;              // splitmix64 (bench/measure.py uses numpy's PCG64)
        for (size_t i = 0; i < d.size(); i += 8) {
            uint64_t z = (s += 0x9E3779B97F4A7C15ull);
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
            z ^= z >> 31;
            memcpy(&d[i], &z, 8);
            d[i + 3] = d[i + 7] = 0xFF;
        }
    }
    return d;
}

// ---------------------------------------------------------------- server side

enum Codec { QUIC, LZ, GLZ };
static const char *codec_name[] = {"quic", "lz", "glz"};

static RedClient *fake_client() { static int c; return reinterpret_cast<RedClient *>(&c); }

struct Encoded {
    bool ok = false;
    std::vector<uint8_t> data;  // the compressed image, linearized
    uint8_t type = 0;           // SPICE_IMAGE_TYPE_*
};

// Copy and free a RedCompressBuf chain (the server hands it to the marshaller).
static void take_bufs(RedCompressBuf *b, uint32_t size, std::vector<uint8_t> *out)
{
    out->resize(size);
    for (uint32_t off = 0; b; ) {
        uint32_t n = std::min<uint32_t>(size - off, sizeof(b->buf));
        memcpy(out->data() + off, b->buf.bytes, n);
        off += n;
        RedCompressBuf *next = b->send_next;
        compress_buf_free(b);
        b = next;
    }
}

// One compression with fresh encoders (a new client: new DCC, new GLZ
// dictionary); only the image_encoders_compress_*() call is timed.
static Encoded compress_once(Codec codec, SpiceBitmap *bmp, int glz_window,
                             std::pair<double, double> *t)
{
    ImageEncoderSharedData shared = {};
    ImageEncoders enc = {};  // zeroed, as in a new DCC (image_encoders_init() leaves glz unset)
    image_encoder_shared_init(&shared);
    image_encoders_init(&enc, &shared);
    if (codec == GLZ) {
        if (!image_encoders_get_glz_dictionary(&enc, fake_client(), 1, glz_window) ||
            !image_encoders_glz_create(&enc, 1)) {
            fprintf(stderr, "GLZ set-up failed\n");
            exit(1);
        }
    }
    auto drawable = red::make_shared<RedDrawable>();   // GLZ keeps a ref to the drawable
    drawable->type = QXL_DRAW_NOP;
    GlzImageRetention retention;
    glz_retention_init(&retention);

    SpiceImage img = {};
    compress_send_data_t comp = {};
    Clock c;
    c.start();
    bool ok = false;
    switch (codec) {
    case QUIC: ok = image_encoders_compress_quic(&enc, &img, bmp, &comp); break;
    case LZ:   ok = image_encoders_compress_lz(&enc, &img, bmp, &comp); break;
    case GLZ:  ok = image_encoders_compress_glz(&enc, &img, bmp, drawable.get(), &retention,
                                                &comp, FALSE /* zlib wrap: low-bandwidth clients only */); break;
    }
    *t = c.stop();

    Encoded e;
    e.ok = ok;
    if (ok) {
        e.type = img.descriptor.type;
        take_bufs(comp.comp_buf, comp.comp_buf_size, &e.data);
    }
    image_encoders_free(&enc);  // frees the GLZ drawables and dictionary too
    return e;
}

// ---------------------------------------------------------------- client side

static jmp_buf dec_jmp;

template <typename Usr> static void dec_error(Usr *, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    longjmp(dec_jmp, 1);
}
template <typename Usr> static void dec_warn(Usr *, const char *, ...) {}
template <typename Usr> static void *dec_malloc(Usr *, int size) { return g_malloc(size); }
template <typename Usr> static void dec_free(Usr *, void *p) { g_free(p); }
static int quic_no_space(QuicUsrContext *, uint32_t **, int) { return 0; }
static int lz_no_space(LzUsrContext *, uint8_t **) { return 0; }
template <typename Usr> static int dec_no_lines(Usr *, uint8_t **) { return 0; }

template <typename Usr> static void usr_init(Usr *u)
{
    u->error = (decltype(u->error))dec_error<Usr>;
    u->warn = dec_warn<Usr>;
    u->info = dec_warn<Usr>;
    u->malloc = dec_malloc<Usr>;
    u->free = dec_free<Usr>;
    u->more_lines = dec_no_lines<Usr>;
}

// Decode as canvas_get_quic() / canvas_get_lz() do, into a freshly allocated
// w*4-stride buffer (the client makes a new pixman surface per image); the
// allocation and the decode are timed. Returns false on a decode error.
static bool decode_once(Codec codec, const Encoded &e, int w, int h,
                        std::vector<uint8_t> *keep, std::pair<double, double> *t)
{
    static QuicUsrContext qu;
    static LzUsrContext lu;
    static QuicContext *quic;
    static LzContext *lz;
    if (!quic) {
        usr_init(&qu); qu.more_space = quic_no_space; quic = quic_create(&qu);
        usr_init(&lu); lu.more_space = lz_no_space; lz = lz_create(&lu);
    }
    uint8_t *volatile out = nullptr;  // volatile: survives the longjmp
    if (setjmp(dec_jmp)) {
        g_free(out);
        return false;
    }
    Clock c;
    c.start();
    out = static_cast<uint8_t *>(g_malloc(size_t(w) * h * 4));
    if (codec == QUIC) {
        QuicImageType type;
        int dw, dh;
        if (quic_decode_begin(quic, (uint32_t *)e.data.data(), e.data.size() >> 2,
                              &type, &dw, &dh) == QUIC_ERROR ||
            dw != w || dh != h ||
            quic_decode(quic, QUIC_IMAGE_TYPE_RGB32, out, w * 4) == QUIC_ERROR) {
            g_free(out);
            return false;
        }
    } else {
        LzImageType type;
        int dw, dh, n, top_down;
        lz_decode_begin(lz, (uint8_t *)e.data.data(), e.data.size(), &type, &dw, &dh,
                        &n, &top_down, nullptr);
        if (dw != w || dh != h || n != w * h || !top_down) {
            g_free(out);
            return false;
        }
        lz_decode(lz, LZ_IMAGE_TYPE_RGB32, out);
    }
    *t = c.stop();
    if (keep) keep->assign(out, out + size_t(w) * h * 4);
    g_free(out);
    return true;
}

static bool same_rgb(const std::vector<uint8_t> &a, const std::vector<uint8_t> &b)
{
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); i += 4)
        if (memcmp(&a[i], &b[i], 3)) return false;
    return true;
}

// ---------------------------------------------------------------- main

struct Row {
    int w, h;
    std::string picture, codec, note;
    bool ok;
    size_t bytes, raw;
    double c_ms, c_wall, d_ms, d_wall;  // medians; CPU = thread CPU time
};

static const char *graduality_name(BitmapGradualType g)
{
    switch (g) {
    case BITMAP_GRADUAL_LOW: return "low";
    case BITMAP_GRADUAL_MEDIUM: return "medium";
    case BITMAP_GRADUAL_HIGH: return "high";
    default: return "n/a";
    }
}

int main(int argc, char **argv)
{
    const char *json_path = nullptr;
    int runs = 5;
    int glz_window = 12 * 1024 * 1024 / 4;  // spice-gtk's default for a 16 MiB qxl_ram_size, in pixels
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--runs") && i + 1 < argc) runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--glz-window") && i + 1 < argc) glz_window = atoi(argv[++i]);
        else json_path = argv[i];
    }
    if (!json_path) {
        fprintf(stderr, "usage: %s OUT.json [--runs N] [--glz-window PIXELS]\n", argv[0]);
        return 2;
    }
    const int big_window = 64 * 1024 * 1024 / 4;  // spice-gtk's largest default window

    const int sizes[][2] = {{1280, 720}, {1920, 1080}, {3840, 2160}};
    const char *pictures[] = {"quadrants", "bars", "noise"};
    std::vector<Row> rows;
    std::vector<std::string> picks;

    for (auto &sz : sizes) {
        int w = sz[0], h = sz[1];
        for (const char *pic : pictures) {
            std::vector<uint8_t> px = make_picture(pic, w, h);
            size_t raw = px.size();
            SpiceBitmap bmp = {};
            bmp.format = SPICE_BITMAP_FMT_32BIT;
            bmp.flags = SPICE_BITMAP_FLAGS_TOP_DOWN;
            bmp.x = w;
            bmp.y = h;
            bmp.stride = w * 4;
            bmp.data = spice_chunks_new_linear(px.data(), raw);

            // memcpy of the frame: the CPU read of the scanout the image path needs
            {
                std::vector<uint8_t> dst(raw, 1);
                std::vector<double> cw, cc;
                for (int r = 0; r <= runs; r++) {
                    Clock c;
                    c.start();
                    memcpy(dst.data(), px.data(), raw);
                    auto t = c.stop();
                    if (r) { cw.push_back(t.first); cc.push_back(t.second); }  // r = 0: warm-up
                }
                rows.push_back({w, h, pic, "memcpy", "pre-touched destination", true, raw, raw,
                                median(cc), median(cw), -1, -1});
            }

            // what spice-server's auto_glz policy would pick (get_compression_for_bitmap())
            BitmapGradualType g = bitmap_get_graduality_level(&bmp);
            bool fits = int64_t(w) * h < glz_window;
            picks.push_back(std::to_string(w) + "x" + std::to_string(h) + " " + pic +
                            ": graduality " + graduality_name(g) + " -> DRAW_COPY with a Drawable: " +
                            (g == BITMAP_GRADUAL_HIGH ? "quic" : fits ? "glz" : "glz refused, lz") +
                            "; no Drawable: " + (g == BITMAP_GRADUAL_HIGH ? "quic" : "lz"));

            for (Codec codec : {QUIC, LZ, GLZ}) {
                for (int win : {glz_window, big_window}) {
                    if (codec != GLZ && win != glz_window) continue;
                    if (codec == GLZ && win == big_window && fits) continue;
                    std::vector<double> cw, cc, dw, dc;
                    Encoded e;
                    for (int r = 0; r <= runs; r++) {
                        std::pair<double, double> t;
                        e = compress_once(codec, &bmp, win, &t);
                        if (r) { cw.push_back(t.first); cc.push_back(t.second); }
                    }
                    Row row = {w, h, pic, codec_name[codec], "", e.ok, e.ok ? e.data.size() : raw,
                               raw, median(cc), median(cw), -1, -1};
                    if (codec == GLZ && win != glz_window)
                        row.codec = "glz (64 MiB window)";
                    if (!e.ok && codec == GLZ) row.bytes = 0;  // nothing made: no GLZ image
                    if (!e.ok) {
                        row.note = codec == GLZ ? "refused: w*h >= window " + std::to_string(win) +
                                                  " px; server falls back to lz"
                                                : "failed; server sends the raw bitmap";
                    } else if (codec == GLZ) {
                        row.note = e.type == SPICE_IMAGE_TYPE_GLZ_RGB ? "GLZ_RGB; decode not measured"
                                                                      : "unexpected image type";
                    } else {
                        std::vector<uint8_t> back;
                        bool good = true;
                        for (int r = 0; r <= runs && good; r++) {
                            std::pair<double, double> t;
                            good = decode_once(codec, e, w, h, r ? nullptr : &back, &t);
                            if (r) { dw.push_back(t.first); dc.push_back(t.second); }
                        }
                        if (!good || !same_rgb(back, px)) {
                            fprintf(stderr, "%dx%d %s %s: decode error or mismatch\n", w, h, pic,
                                    codec_name[codec]);
                            return 1;
                        }
                        row.d_ms = median(dc);
                        row.d_wall = median(dw);
                        row.note = "decoded == source (RGB)";
                    }
                    rows.push_back(row);
                    fprintf(stderr, "done %dx%d %s %s\n", w, h, pic, row.codec.c_str());
                }
            }
            spice_chunks_destroy(bmp.data);
        }
    }

    // markdown table, after the machine it ran on
    std::string cpu = "?";
    if (FILE *ci = fopen("/proc/cpuinfo", "r")) {
        char line[256];
        while (fgets(line, sizeof line, ci))
            if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
                cpu = g_strstrip(strchr(line, ':') + 1);
                break;
            }
        fclose(ci);
    }
    printf("# image_cost: a GL scanout sent as a lossless 2D image\n\n"
           "CPU: %s, %ld online CPUs. spice-server 0.16.0 (build/patched), LZ4: %s.\n\n",
           cpu.c_str(), sysconf(_SC_NPROCESSORS_ONLN),
#ifdef USE_LZ4
           "built"
#else
           "not built (spice-server:lz4=false)"
#endif
    );
    auto f = [](double v) {
        char b[32] = "-";
        if (v >= 0) snprintf(b, sizeof b, "%.2f", v);
        return std::string(b);
    };
    auto ratio = [](const Row &r, const char *none) {
        char b[32];
        snprintf(b, sizeof b, "%.4f", double(r.bytes) / r.raw);
        return r.bytes ? std::string(b) : std::string(none);
    };
    printf("| size | picture | codec | bytes | compress ms | decode ms | ratio to raw | wall ms (c / d) | note |\n");
    printf("|---|---|---|---:|---:|---:|---:|---:|---|\n");
    for (auto &r : rows)
        printf("| %dx%d | %s | %s | %s | %s | %s | %s | %s / %s | %s |\n", r.w, r.h,
               r.picture.c_str(), r.codec.c_str(),
               r.bytes ? std::to_string(r.bytes).c_str() : "-", f(r.c_ms).c_str(),
               f(r.d_ms).c_str(), ratio(r, "-").c_str(),
               f(r.c_wall).c_str(), f(r.d_wall).c_str(), r.note.c_str());
    printf("\nms = median of %d runs of thread CPU time (wall-clock medians in the last column); "
           "memcpy row: \"compress ms\" is the copy.\nGLZ window: %d pixels. auto_glz picks:\n\n",
           runs, glz_window);
    for (auto &p : picks) printf("- %s\n", p.c_str());

    FILE *js = fopen(json_path, "w");
    if (!js) { perror(json_path); return 1; }
    fprintf(js, "{\n  \"runs\": %d,\n  \"glz_window_pixels\": %d,\n  \"time\": \"ms, median; *_cpu_ms = thread CPU time, *_wall_ms = CLOCK_MONOTONIC\",\n  \"rows\": [\n", runs, glz_window);
    for (size_t i = 0; i < rows.size(); i++) {
        auto &r = rows[i];
        fprintf(js, "    {\"width\": %d, \"height\": %d, \"picture\": \"%s\", \"codec\": \"%s\", "
                    "\"ok\": %s, \"bytes\": %s, \"raw_bytes\": %zu, \"ratio\": %s, "
                    "\"compress_cpu_ms\": %.3f, \"compress_wall_ms\": %.3f, "
                    "\"decode_cpu_ms\": %s, \"decode_wall_ms\": %s, \"note\": \"%s\"}%s\n",
                r.w, r.h, r.picture.c_str(), r.codec.c_str(), r.ok ? "true" : "false",
                r.bytes ? std::to_string(r.bytes).c_str() : "null", r.raw,
                ratio(r, "null").c_str(), r.c_ms, r.c_wall,
                r.d_ms < 0 ? "null" : std::to_string(r.d_ms).c_str(),
                r.d_wall < 0 ? "null" : std::to_string(r.d_wall).c_str(), r.note.c_str(),
                i + 1 < rows.size() ? "," : "");
    }
    fprintf(js, "  ],\n  \"auto_glz_picks\": [\n");
    for (size_t i = 0; i < picks.size(); i++)
        fprintf(js, "    \"%s\"%s\n", picks[i].c_str(), i + 1 < picks.size() ? "," : "");
    fprintf(js, "  ]\n}\n");
    fclose(js);
    return 0;
}
