"""pipes"""
