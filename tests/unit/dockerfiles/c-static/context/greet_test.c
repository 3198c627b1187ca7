#include "greet.h"
int main(void) { return 0; }
