"""Tensor algebra shared by layers, methods and compression: tensor-train and Tucker decompositions.

Kept in one place, below every package that uses it (as tensorly keeps ``tenalg``).
"""
