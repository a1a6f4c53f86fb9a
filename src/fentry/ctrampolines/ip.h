/* Ip: a site in Python code (ip.c). */
#ifndef FENTRY_IP_H
#define FENTRY_IP_H

#include "util.h"

typedef struct {
    PyObject_HEAD
    PyObject *code;
    PyObject *offset;
} IpObject;

PyObject *ip_make(PyObject *code, PyObject *offset);

#endif
