"""Byte pipes to terminals (serial, TCP, raw USB), named by one URL grammar."""
