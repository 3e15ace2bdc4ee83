/* Region-of-interest JPEG decoding with libjpeg-turbo's partial decompression (issue 32).

   decode_box(data, eighths, top, left, height, width) -> bytearray of height x width x 3 RGB bytes: the box
   (top, left, height, width) of the image as decoded at the DCT scale eighths/8 (1, 2, 4 or 8). Only the rows
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
  unsigned char *out; /* height * width * 3 */
  unsigned char *row; /* one decoded row, allocated here */
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
  j->row = malloc((size_t)w * (size_t)channels);
  if (!j->row) {
    snprintf(j->message, sizeof j->message, "out of memory");
    goto done;
  }
  if (j->top > 0) jpeg_skip_scanlines(&cinfo, (JDIMENSION)j->top);
  const unsigned char *box = j->row + (size_t)(j->left - (int)x) * (size_t)channels;
  size_t stride = (size_t)j->width * 3;
  for (int r = 0; r < j->height; r++) {
    JSAMPROW p = j->row;
    if (jpeg_read_scanlines(&cinfo, &p, 1) != 1) {
      snprintf(j->message, sizeof j->message, "JPEG data ends at row %d", j->top + r);
      goto done;
    }
    unsigned char *dst = j->out + (size_t)r * stride;
    if (cmyk)
      cmyk_to_rgb(box, dst, j->width);
    else if (channels == 3)
      memcpy(dst, box, stride);
    else
      for (int c = 0; c < j->width; c++) dst[3 * c] = dst[3 * c + 1] = dst[3 * c + 2] = box[c];
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
  job j;
  if (!PyArg_ParseTuple(args, "y*iiiii:decode_box", &data, &j.eighths, &j.top, &j.left, &j.height, &j.width))
    return NULL;
  if (j.eighths != 1 && j.eighths != 2 && j.eighths != 4 && j.eighths != 8) {
    PyBuffer_Release(&data);
    return PyErr_Format(PyExc_ValueError, "eighths must be 1, 2, 4 or 8, not %d", j.eighths);
  }
  if (j.height < 1 || j.width < 1 || j.height > 65535 || j.width > 65535) {
    PyBuffer_Release(&data);
    return PyErr_Format(PyExc_ValueError, "box of %d x %d pixels", j.height, j.width);
  }
  PyObject *out = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)j.height * j.width * 3);
  if (!out) {
    PyBuffer_Release(&data);
    return NULL;
  }
  j.data = data.buf;
  j.size = (size_t)data.len;
  j.out = (unsigned char *)PyByteArray_AS_STRING(out);
  j.message[0] = 0;
  int status;
  Py_BEGIN_ALLOW_THREADS
  status = run(&j);
  Py_END_ALLOW_THREADS
  PyBuffer_Release(&data);
  if (status) {
    Py_DECREF(out);
    return PyErr_Format(PyExc_ValueError, "%s", j.message[0] ? j.message : "cannot decode the JPEG");
  }
  return out;
}

static PyMethodDef methods[] = {
    {"decode_box", decode_box, METH_VARARGS,
     "decode_box(data, eighths, top, left, height, width) -> bytearray: the box of the JPEG decoded at scale "
     "eighths/8 as height x width x 3 RGB bytes, decompressing only the rows and iMCU columns it covers."},
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
