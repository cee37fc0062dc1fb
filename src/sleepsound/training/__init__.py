"""sleepsound.training"""
