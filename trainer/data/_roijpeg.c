/* Region-of-interest JPEG decoding with libjpeg-turbo's partial decompression (issue 32).

   decode_box(data, eighths, top, left, out) -> out: the box (top, left, height, width) of the image as decoded
   at the DCT scale eighths/8 (1, 2, 4 or 8), written as RGB into out, a writable uint8 (height, width, 3)
   array whose rows may be a wider image's (a numpy view): the caller decides where it goes. Only the rows
   of the box are decompressed (jpeg_skip_scanlines before it, jpeg_abort_decompress after it) and only the iMCU
   columns that cover it (jpeg_crop_scanline), so a crop of a quarter of the image costs about a quarter of
   its IDCT, upsampling and colour conversion (the entropy decoding of the skipped rows above the box remains).

   The pixels equal a full decode at the same scale cut to the box (tests/trainer/data/test_roi_decode.py):
   fancy chroma upsampling reads one chroma sample on each side of a pixel, so the decoded columns extend one
   pixel beyond the box where the image has one, and the box is copied out of them. Greyscale images come out
   as RGB; CMYK and YCCK (Adobe) images are decompressed as CMYK and converted as TurboJPEG converts them
   (r = c k / 255, rounded), which equals PIL's convert("RGB"). The GIL is released while decoding. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

typedef struct {
  struct jpeg_error_mgr pub;
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
} error_state;

static void on_error(j_common_ptr cinfo) {
  error_state *err = (error_state *)cinfo->err;
  (*cinfo->err->format_message)(cinfo, err->message);
  longjmp(err->jump, 1);
}

/* Warnings (level -1: corrupt or truncated data that libjpeg would patch over) fail the decode, as simplejpeg's
   strict mode does, so a damaged image is skipped and counted rather than trained on half grey; trace messages
   (level >= 0) are dropped. */
static void on_message(j_common_ptr cinfo, int level) {
  if (level < 0) on_error(cinfo);
}

typedef struct {
  const unsigned char *data;
  size_t size;
  int eighths, top, left, height, width;
  unsigned char *out;  /* the box's first pixel; rows `stride` bytes apart, 3 bytes per pixel */
  Py_ssize_t stride;
  unsigned char *row;  /* one decoded row, allocated here */
  char message[JMSG_LENGTH_MAX];
} job;

static void cmyk_to_rgb(const unsigned char *in, unsigned char *out, int pixels) {
  for (int i = 0; i < pixels; i++, in += 4, out += 3) {
    int k = in[3];
    out[0] = (unsigned char)((in[0] * k + 127) / 255);
    out[1] = (unsigned char)((in[1] * k + 127) / 255);
    out[2] = (unsigned char)((in[2] * k + 127) / 255);
  }
}

/* 0 on success; otherwise job->message says why. Runs without the GIL. */
static int run(job *j) {
  struct jpeg_decompress_struct cinfo;
  error_state err;
  volatile int status = -1; /* volatile: read after a longjmp */
  cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = on_error;
  err.pub.emit_message = on_message;
  err.message[0] = 0;
  j->row = NULL;
  if (setjmp(err.jump)) {
    snprintf(j->message, sizeof j->message, "%s", err.message);
    goto done;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, j->data, (unsigned long)j->size);
  jpeg_read_header(&cinfo, TRUE);
  int cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
  cinfo.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
  cinfo.scale_num = (unsigned int)j->eighths;
  cinfo.scale_denom = 8;
  jpeg_calc_output_dimensions(&cinfo);
  if (j->top < 0 || j->left < 0 || j->height < 1 || j->width < 1 ||
      j->top + j->height > (int)cinfo.output_height || j->left + j->width > (int)cinfo.output_width) {
    snprintf(j->message, sizeof j->message, "box (%d, %d, %d, %d) outside the %ux%u image at scale %d/8",
             j->top, j->left, j->height, j->width, cinfo.output_height, cinfo.output_width, j->eighths);
    goto done;
  }
  jpeg_start_decompress(&cinfo);
  /* one column beyond the box on each side: the fancy upsampling of an edge column reads its neighbour */
  int first = j->left > 0 ? j->left - 1 : 0;
  int last = j->left + j->width < (int)cinfo.output_width ? j->left + j->width + 1 : (int)cinfo.output_width;
  JDIMENSION x = (JDIMENSION)first, w = (JDIMENSION)(last - first);
  if (x > 0 || w < cinfo.output_width) jpeg_crop_scanline(&cinfo, &x, &w); /* x rounds down to an iMCU */
  int channels = cinfo.output_components;
  /* rows are read rec_outbuf_height at a time (2 for 4:2:0): one at a time sends libjpeg-turbo's h2v2 fancy
     upsampler through its spare-row copy and made a whole-image decode ~20 % slower than TurboJPEG's */
  int block = cinfo.rec_outbuf_height > 0 && cinfo.rec_outbuf_height <= 16 ? cinfo.rec_outbuf_height : 1;
  int direct = !cmyk && channels == 3 && (int)x == j->left && (int)w == j->width; /* rows land in out itself */
  size_t row_bytes = (size_t)w * (size_t)channels;
  if (!direct) {
    j->row = malloc(row_bytes * (size_t)block);
    if (!j->row) {
      snprintf(j->message, sizeof j->message, "out of memory");
      goto done;
    }
  }
  if (j->top > 0) jpeg_skip_scanlines(&cinfo, (JDIMENSION)j->top);
  size_t offset = (size_t)(j->left - (int)x) * (size_t)channels;
  JSAMPROW rows[16];
  for (int r = 0; r < j->height;) {
    int want = j->height - r < block ? j->height - r : block;
    for (int k = 0; k < want; k++) rows[k] = direct ? j->out + (r + k) * j->stride : j->row + (size_t)k * row_bytes;
    int got = (int)jpeg_read_scanlines(&cinfo, rows, (JDIMENSION)want);
    if (got < 1) {
      snprintf(j->message, sizeof j->message, "JPEG data ends at row %d", j->top + r);
      goto done;
    }
    for (int k = 0; k < got && !direct; k++) {
      const unsigned char *box = rows[k] + offset;
      unsigned char *dst = j->out + (r + k) * j->stride;
      if (cmyk)
        cmyk_to_rgb(box, dst, j->width);
      else if (channels == 3)
        memcpy(dst, box, (size_t)j->width * 3);
      else
        for (int c = 0; c < j->width; c++) dst[3 * c] = dst[3 * c + 1] = dst[3 * c + 2] = box[c];
    }
    r += got;
  }
  status = 0;
done:
  free(j->row);
  j->row = NULL;
  jpeg_destroy_decompress(&cinfo); /* also aborts a decompression left half-way */
  return status;
}

static PyObject *decode_box(PyObject *self, PyObject *args) {
  (void)self;
  Py_buffer data;
  PyObject *target;
  job j;
  if (!PyArg_ParseTuple(args, "y*iiiO:decode_box", &data, &j.eighths, &j.top, &j.left, &target)) return NULL;
  Py_buffer out;
  if (PyObject_GetBuffer(target, &out, PyBUF_RECORDS) < 0) { /* writable, with shape and strides */
    PyBuffer_Release(&data);
    return NULL;
  }
  PyObject *result = NULL;
  if (j.eighths != 1 && j.eighths != 2 && j.eighths != 4 && j.eighths != 8) {
    PyErr_Format(PyExc_ValueError, "eighths must be 1, 2, 4 or 8, not %d", j.eighths);
  } else if (out.ndim != 3 || out.itemsize != 1 || out.shape[2] != 3 || out.strides[2] != 1 || out.strides[1] != 3 ||
             out.shape[0] < 1 || out.shape[1] < 1 || out.shape[0] > 65535 || out.shape[1] > 65535) {
    PyErr_SetString(PyExc_ValueError, "out must be a non-empty uint8 (height, width, 3) array with contiguous pixels");
  } else {
    j.data = data.buf;
    j.size = (size_t)data.len;
    j.height = (int)out.shape[0];
    j.width = (int)out.shape[1];
    j.out = out.buf;
    j.stride = out.strides[0];
    j.message[0] = 0;
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = run(&j);
    Py_END_ALLOW_THREADS
    if (status)
      PyErr_Format(PyExc_ValueError, "%s", j.message[0] ? j.message : "cannot decode the JPEG");
    else
      result = Py_NewRef(target);
  }
  PyBuffer_Release(&out);
  PyBuffer_Release(&data);
  return result;
}

static PyMethodDef methods[] = {
    {"decode_box", decode_box, METH_VARARGS,
     "decode_box(data, eighths, top, left, out) -> out: the box of the JPEG decoded at scale eighths/8 whose "
     "top-left pixel is (top, left) and whose size is out's, written as RGB into out (a writable uint8 "
     "(height, width, 3) array, rows at any stride), decompressing only the rows and iMCU columns it covers."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_roijpeg",
    .m_doc = "Region-of-interest JPEG decoding (libjpeg-turbo partial decompression).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__roijpeg(void) {
  PyObject *m = PyModule_Create(&module);
#ifdef LIBJPEG_TURBO_VERSION_NUMBER
  if (m && PyModule_AddIntConstant(m, "LIBJPEG_TURBO_VERSION_NUMBER", LIBJPEG_TURBO_VERSION_NUMBER) < 0) {
    Py_DECREF(m);
    return NULL;
  }
#endif
  return m;
}
