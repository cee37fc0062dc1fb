"""sleepsound.data"""
