"""sleepsound.reports"""
