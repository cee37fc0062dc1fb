"""sleepsound.campaign"""
